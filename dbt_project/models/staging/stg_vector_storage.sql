with

source as (
    select * from {{ source('bikematch', 'vector_storage') }}
),

renamed as (
    select
        ---------- ids
        bike_id,
        model,

        ---------- vectors
        embedding,
        image_embedding,
        text_embedding,
        text_only,

        ---------- versions: a new input_hash means the listing must be matched again;
        ---------- source_hash says which title and image URL the vector was made from
        input_hash,
        source_hash,

        ---------- timestamps
        embedded_at

    from source
)

select * from renamed
