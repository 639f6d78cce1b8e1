-- The corrections by hand, once in each direction: for each listing, the listings
-- it is the same product as (link) or is not (unlink).

with

source as (
    select * from {{ source('bikematch', 'match_links') }}
),

both_ways as (
    select
        first_id as bike_id,
        second_id as other_id,
        decision,
        note,
        created_at
    from source
    union all
    select
        second_id as bike_id,
        first_id as other_id,
        decision,
        note,
        created_at
    from source
)

select * from both_ways
