-- One row per product (cluster) with at least one listing on sale: what it is,
-- how many shops sell it, and how their prices compare, in one currency
-- (bike_offers.comparable_price; unconverted_offers counts the priced offers
-- whose currency had no exchange rate, which the prices leave out). The
-- cheapest offer is also given among those not marked out of stock. The spread is
-- given over all offers (price_spread) and over those whose price is not flagged
-- as far from the others' (usual_price_spread; bike_offers.price_outlier).
with

offers as (
    select * from {{ ref('bike_offers') }}
),

representatives as (
    -- The seed (anchor listing first) names and pictures the cluster.
    select distinct on (cluster_id)
        cluster_id,
        name,
        image_url,
        brand
    from offers
    order by
        cluster_id asc,
        matched_via in ('anchor', 'seed', 'ambiguous') desc,
        similarity desc nulls last,
        webshop asc,
        url asc
),

cheapest as (
    select distinct on (cluster_id)
        cluster_id,
        webshop as cheapest_shop,
        url as cheapest_url
    from offers
    where comparable_price is not null
    order by cluster_id, comparable_price, webshop, url
),

cheapest_available as (
    -- The same among the offers not marked out of stock (unknown counts as available).
    select distinct on (cluster_id)
        cluster_id,
        webshop as cheapest_available_shop,
        comparable_price as min_available_price
    from offers
    where comparable_price is not null and coalesce(availability, '') <> 'OutOfStock'
    order by cluster_id, comparable_price, webshop, url
),

prices as (
    select
        cluster_id,
        count(*) as listings,
        count(distinct webshop) as shops,
        min(comparable_price) as min_price,
        percentile_cont(0.5) within group (order by comparable_price)::numeric(12, 2)
            as median_price,
        max(comparable_price) as max_price,
        min(comparable_currency) as currency,
        count(*) filter (where price is not null and comparable_price is null)
            as unconverted_offers,
        count(*) filter (where availability = 'OutOfStock') as out_of_stock_offers,
        count(*) filter (where price_outlier) as price_outliers,
        min(comparable_price) filter (where not price_outlier) as min_usual_price,
        max(comparable_price) filter (where not price_outlier) as max_usual_price
    from offers
    group by cluster_id
),

clusters as (
    select
        ---------- ids
        prices.cluster_id,

        ---------- what it is
        representatives.name,
        representatives.brand,
        representatives.image_url,

        ---------- who sells it
        prices.listings,
        prices.shops,
        cheapest.cheapest_shop,
        cheapest.cheapest_url,
        cheapest_available.cheapest_available_shop,
        prices.out_of_stock_offers,

        ---------- numerics
        prices.currency,
        prices.min_price,
        prices.median_price,
        prices.max_price,
        prices.max_price - prices.min_price as price_spread,
        round(100 * (prices.max_price - prices.min_price) / nullif(prices.min_price, 0), 1)
            as price_spread_pct,
        cheapest_available.min_available_price,
        prices.unconverted_offers,

        ---------- numerics without the offers bike_offers flags as price outliers
        prices.price_outliers,
        prices.min_usual_price,
        prices.max_usual_price,
        prices.max_usual_price - prices.min_usual_price as usual_price_spread
    from prices
    inner join representatives on prices.cluster_id = representatives.cluster_id
    left join cheapest on prices.cluster_id = cheapest.cluster_id
    left join cheapest_available on prices.cluster_id = cheapest_available.cluster_id
)

select * from clusters
