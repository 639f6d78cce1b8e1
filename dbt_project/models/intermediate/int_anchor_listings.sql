-- The anchor shop's listings: each seeds a cluster.
with

listings as (
    select * from {{ ref('int_listings') }}
),

anchor as (
    select * from listings
    where is_anchor
)

select * from anchor
