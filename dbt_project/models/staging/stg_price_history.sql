with

source as (
    select * from {{ source('bikematch', 'price_history') }}
),

renamed as (
    select
        ---------- ids
        bike_id,

        ---------- numerics
        price,
        currency,

        ---------- timestamps
        seen_at

    from source
)

select * from renamed
