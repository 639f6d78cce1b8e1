with

source as (
    select * from {{ source('bikematch', 'scraped_bikes') }}
),

renamed as (
    select
        ---------- ids
        id as bike_id,
        webshop,
        url,
        sku,

        ---------- text
        name,
        brand,
        image_url,
        availability,

        ---------- numerics
        price,
        currency,

        ---------- identifiers: only GTINs whose check digit is right count
        case when {{ is_valid_gtin('gtin') }} then lpad(gtin, 14, '0') end as valid_gtin,

        ---------- timestamps
        first_seen_at,
        last_seen_at

    from source
)

select * from renamed
