-- Exchange rates, so prices in different currencies can be compared: a shop in
-- the UK sells in GBP, one in Denmark in DKK. One row per currency: how many
-- units of it one euro buys (the ECB's reference rates are quoted that way),
-- and the day the rate is of. The euro itself needs no row.
--
-- `bikematch rates` (and `bikematch run`, when the listings on sale are in
-- more than one currency) fills it from the ECB's daily reference rates; rows
-- can also be written by hand, with source 'manual'. The dbt models compare
-- prices through it (bike_offers.comparable_price, bike_clusters' prices, and
-- the price gap that weighs against a match); a price whose currency has no
-- row is left out of those comparisons, and counted.
create table if not exists exchange_rates (
    currency text primary key check (currency ~ '^[A-Z]{3}$' and currency <> 'EUR'),
    per_euro numeric(20, 8) not null check (per_euro > 0),
    rate_date date not null,
    source text not null default 'manual',
    updated_at timestamptz not null default now()
);
