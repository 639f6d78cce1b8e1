with

source as (
    select * from {{ source('bikematch', 'exchange_rates') }}
),

renamed as (
    select
        ---------- ids
        currency,

        ---------- numerics
        per_euro,

        ---------- timestamps
        rate_date

    from source
    where currency <> 'EUR'
),

with_the_euro as (
    select * from renamed
    union all
    select
        'EUR' as currency,
        1::numeric as per_euro,
        null::date as rate_date
)

select * from with_the_euro
