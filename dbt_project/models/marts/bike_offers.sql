-- One row per listing still on sale: its cluster, shop, price and how it ranks
-- on price within its cluster (1 = cheapest).
--
-- Prices are compared in one currency: var('report_currency'), else the one
-- most listings on sale are priced in. comparable_price is the listing's price
-- in it, converted through stg_exchange_rates where the listing's currency
-- differs (rate_date: the older of the two rates used); null where a rate is
-- missing, or the listing's currency is, and then the listing takes no part in
-- price comparisons. Where no listing gives a currency (an imported feed
-- without one), the prices are compared as they are.
{% set report_currency = var('report_currency', none) %}
{% if report_currency and not modules.re.fullmatch('[A-Z]{3}', report_currency | string) %}
    {{ exceptions.raise_compiler_error(
        "var report_currency: expected an ISO 4217 code such as EUR, got "
        ~ report_currency
    ) }}
{% endif %}

with

master_bikes as (
    select * from {{ ref('master_bikes') }}
),

listings as (
    select * from {{ ref('int_listings') }}
),

rates as (
    select * from {{ ref('stg_exchange_rates') }}
),

offers as (
    select
        ---------- ids
        master_bikes.cluster_id,
        master_bikes.bike_id,
        listings.webshop,
        listings.url,

        ---------- listing
        listings.name,
        listings.brand,
        listings.image_url,
        listings.availability,
        listings.valid_gtin as gtin,

        ---------- numerics
        listings.price,
        listings.currency,
        master_bikes.similarity,

        ---------- how it matched
        master_bikes.matched_via,
        master_bikes.matched_bike_id,

        ---------- timestamps
        master_bikes.clustered_at
    from master_bikes
    inner join listings on master_bikes.bike_id = listings.bike_id
),

report_currency as (
    {% if report_currency -%}
        select {{ sql_literal(report_currency) }}::text as currency
    {%- else -%}
        select (
            select offers.currency
            from offers
            where offers.price is not null and offers.currency is not null
            group by offers.currency
            order by count(*) desc, offers.currency asc
            limit 1
        ) as currency
    {%- endif %}
),

compared as (
    select
        offers.*,
        report_currency.currency as comparable_currency,
        case
            when
                offers.currency = report_currency.currency
                or (offers.currency is null and report_currency.currency is null)
                then offers.price
            else round(offers.price / own_rate.per_euro * report_rate.per_euro, 2)
        end as comparable_price,
        case
            when offers.currency <> report_currency.currency
                then least(own_rate.rate_date, report_rate.rate_date)
        end as rate_date
    from offers
    cross join report_currency
    left join rates as own_rate on offers.currency = own_rate.currency
    left join rates as report_rate on report_currency.currency = report_rate.currency
),

ranked as (
    select
        *,
        case
            when comparable_price is not null
                then rank() over (partition by cluster_id order by comparable_price nulls last)
        end as price_rank,
        count(*) over (partition by cluster_id) as listings_in_cluster
    from compared
)

select * from ranked
