-- One row per product (cluster) with at least one listing on sale: what it is,
-- how many shops sell it, and how their prices compare.
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
        matched_via in ('anchor', 'seed') desc,
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
    where price is not null
    order by cluster_id, price, webshop, url
),

prices as (
    select
        cluster_id,
        count(*) as listings,
        count(distinct webshop) as shops,
        min(price) as min_price,
        percentile_cont(0.5) within group (order by price)::numeric(12, 2) as median_price,
        max(price) as max_price,
        mode() within group (order by currency) as currency
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

        ---------- numerics
        prices.currency,
        prices.min_price,
        prices.median_price,
        prices.max_price,
        prices.max_price - prices.min_price as price_spread,
        round(100 * (prices.max_price - prices.min_price) / nullif(prices.min_price, 0), 1)
            as price_spread_pct
    from prices
    inner join representatives on prices.cluster_id = representatives.cluster_id
    left join cheapest on prices.cluster_id = cheapest.cluster_id
)

select * from clusters
