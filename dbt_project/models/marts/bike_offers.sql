-- One row per listing still on sale: its cluster, shop, what its title says of
-- the product (battery_wh, frame_type, model_year, motor), its price, how it
-- ranks on price within its cluster (1 = cheapest), and whether the price is far
-- from the other offers' (price_outlier, price_outlier_reason).
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

        ---------- what the title says of the product
        listings.battery_wh,
        listings.frame_type,
        listings.model_year,
        listings.motor,

        ---------- numerics
        listings.price,
        listings.currency,
        master_bikes.similarity,

        ---------- how it matched
        master_bikes.matched_via,
        master_bikes.matched_bike_id,
        master_bikes.score,

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
),

cluster_prices as (
    -- Each cluster's comparable prices, in order.
    select
        cluster_id,
        array_agg(comparable_price order by comparable_price) filter (
            where comparable_price is not null
        ) as prices
    from compared
    group by cluster_id
),

against_the_others as (
    -- The median comparable price of the other offers in the cluster: its prices
    -- less one equal to the offer's own (a pass over a few prices per offer, where
    -- a look-up of the other offers themselves was one over the whole catalogue).
    select
        ranked.*,
        others.median_price as others_median_price,
        others.offers as other_offers
    from ranked
    inner join cluster_prices on ranked.cluster_id = cluster_prices.cluster_id
    left join lateral (
        select
            percentile_cont(0.5) within group (order by other.price)::numeric(12, 2)
                as median_price,
            count(*) as offers
        from unnest(cluster_prices.prices) with ordinality as other (price, position)
        where
            other.position
            <> coalesce(array_position(cluster_prices.prices, ranked.comparable_price), 0)
    ) as others on true
),

flagged as (
    -- A price more than var('price_outlier_ratio') times the median of the other
    -- offers' (or less than that median divided by it) is flagged: a sale, a
    -- typo, another currency, or an offer that is another product. In a cluster
    -- of two, both offers are flagged: which one is off cannot be told.
    select
        *,
        coalesce(
            abs(ln(comparable_price / nullif(others_median_price, 0)))
            > ln({{ var('price_outlier_ratio') }}),
            false
        ) as price_outlier
    from against_the_others
)

select
    *,
    case
        when price_outlier
            then format(
                '%s%% %s the median %s of the %s other offers',
                round(100 * abs(comparable_price / others_median_price - 1)),
                case when comparable_price > others_median_price then 'above' else 'below' end,
                others_median_price,
                other_offers
            )
    end as price_outlier_reason
from flagged
