{#-
    The k nearest neighbours of each listing by cosine distance of the
    concatenated [image, text] embedding. Incremental: only listings whose
    current vector has not been looked up yet (new listings, changed titles or
    images) are searched, so a nightly run costs in proportion to what changed.

    The lookup is `order by embedding <=> x limit k` in a lateral join, which
    the model's HNSW index serves (a threshold join could not use it). The
    cast to halfvec(dims) and `model = ...` must match the partial expression
    index that bikematch_register_model() created. Neighbours come from other
    shops only; pgvector's iterative index scan (0.8+) keeps scanning past a
    shop's own listings until k are found.
-#}
{{
    config(
        materialized='incremental',
        unique_key=['model', 'bike_id', 'neighbour_id'],
        incremental_strategy='delete+insert',
        pre_hook=[
            "set hnsw.ef_search = " ~ var('hnsw_ef_search'),
            "{{ iterative_scan_setting() }}",
        ],
        post_hook="
            delete from {{ this }} as neighbours
            where not exists (
                select from {{ ref('stg_vector_storage') }} as vectors
                where
                    vectors.bike_id = neighbours.bike_id
                    and vectors.model = neighbours.model
                    and vectors.input_hash = neighbours.input_hash
            )",
    )
}}
{% set dims = embedding_dims(var('embedding_model')) %}

with

listings as (
    select * from {{ ref('int_listings') }}
),

vectors as (
    select * from {{ ref('stg_vector_storage') }}
    where model = {{ sql_literal(var('embedding_model')) }}
),

listings_to_match as (
    -- The set difference: active listings whose current vector was never looked up.
    select
        vectors.bike_id,
        vectors.model,
        vectors.input_hash,
        vectors.embedding,
        listings.webshop
    from vectors
    inner join listings on vectors.bike_id = listings.bike_id
    {% if is_incremental() %}
        where not exists (
            select from {{ this }} as done
            where
                done.bike_id = vectors.bike_id
                and done.model = vectors.model
                and done.input_hash = vectors.input_hash
        )
    {% endif %}
),

neighbours as (
    {% if dims is none %}
        -- No vectors for this model yet: an empty table of the right shape.
        select
            listings_to_match.bike_id,
            listings_to_match.model,
            listings_to_match.input_hash,
            null::uuid as neighbour_id,
            null::text as neighbour_input_hash,
            null::float8 as similarity
        from listings_to_match
        where false
    {% else %}
        select
            listings_to_match.bike_id,
            listings_to_match.model,
            listings_to_match.input_hash,
            nearest.bike_id as neighbour_id,
            nearest.input_hash as neighbour_input_hash,
            1 - nearest.distance as similarity
        from listings_to_match
        cross join lateral (
            select
                candidate.bike_id,
                candidate.input_hash,
                candidate.embedding::halfvec({{ dims }})
                <=> listings_to_match.embedding::halfvec({{ dims }}) as distance
            -- The source table itself: the HNSW index lives there, and the
            -- planner does not flatten the staging view inside a lateral join.
            from {{ source('bikematch', 'vector_storage') }} as candidate
            inner join {{ source('bikematch', 'scraped_bikes') }} as candidate_listing
                on candidate.bike_id = candidate_listing.id
            where
                -- a literal, so the planner can use the model's partial index
                candidate.model = {{ sql_literal(var('embedding_model')) }}
                and candidate.bike_id <> listings_to_match.bike_id
                -- Other shops only: a shop's own look-alikes would fill the k places.
                and candidate_listing.webshop <> listings_to_match.webshop
            order by
                candidate.embedding::halfvec({{ dims }})
                <=> listings_to_match.embedding::halfvec({{ dims }})
            limit {{ var('candidate_k') }}
        ) as nearest
    {% endif %}
)

select * from neighbours
