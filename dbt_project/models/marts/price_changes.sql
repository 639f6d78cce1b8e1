-- One row per price change of a listing (its first price is not a change).
with

history as (
    select * from {{ ref('stg_price_history') }}
),

listings as (
    select * from {{ ref('stg_scraped_bikes') }}
),

master_bikes as (
    select * from {{ ref('master_bikes') }}
),

with_previous as (
    select
        bike_id,
        price,
        currency,
        seen_at,
        lag(price) over (partition by bike_id order by seen_at) as previous_price,
        lag(seen_at) over (partition by bike_id order by seen_at) as previous_seen_at
    from history
),

changes as (
    select
        ---------- ids
        with_previous.bike_id,
        master_bikes.cluster_id,
        listings.webshop,
        listings.url,
        listings.name,

        ---------- numerics
        with_previous.previous_price,
        with_previous.price,
        with_previous.currency,
        with_previous.price - with_previous.previous_price as price_change,
        round(
            100 * (with_previous.price - with_previous.previous_price)
            / nullif(with_previous.previous_price, 0),
            1
        ) as price_change_pct,

        ---------- timestamps
        with_previous.seen_at as changed_at
    from with_previous
    inner join listings on with_previous.bike_id = listings.bike_id
    left join master_bikes on with_previous.bike_id = master_bikes.bike_id
    where with_previous.previous_seen_at is not null
)

select * from changes
