-- One row per listing still on sale: its cluster, shop, price and how it ranks
-- on price within its cluster (1 = cheapest).
with

master_bikes as (
    select * from {{ ref('master_bikes') }}
),

listings as (
    select * from {{ ref('int_listings') }}
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

ranked as (
    select
        *,
        case
            when price is not null
                then rank() over (partition by cluster_id order by price nulls last)
        end as price_rank,
        count(*) over (partition by cluster_id) as listings_in_cluster
    from offers
)

select * from ranked
