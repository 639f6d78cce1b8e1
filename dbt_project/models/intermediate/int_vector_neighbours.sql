{#-
    The k nearest neighbours of each listing by cosine distance of the
    concatenated [image, text] embedding. Incremental: only listings whose
    current vector has not been looked up yet (new listings, changed titles or
    images) are searched, so a nightly run costs in proportion to what changed.

    The lookup is `order by embedding <=> x limit k` on the model's HNSW index
    (a threshold join could not use it), in a function the pre-hook creates
    (macros/neighbour_search.sql) so that Postgres runs the searches in
    parallel workers. While the model builds, min_parallel_table_scan_size is
    lifted (small tables get workers too) and the leader only collects and
    writes: the searching processes are then exactly
    max_parallel_workers_per_gather (2 by default; raise it on a server with
    more cores). Neighbours come from other shops only. The hooks' settings are
    `set local`: they end with the model's transaction, so no later model, nor
    a transaction pooler's next client on this server connection, inherits them.

    A listing is searched again, too, when its photo became its shop's
    placeholder or stopped being one (int_listings.image_is_shared, which other
    listings of the shop decide): searched_by_title says how its rows were found.

    The post-hook drops the rows of vectors that were replaced or deleted, and
    those found the other way than the listing is searched now. It reads the
    source table, not the staging view: inside a DELETE, Postgres does not
    flatten the view (its CTEs) and would read every embedding.
-#}
{{
    config(
        materialized='incremental',
        unique_key=['model', 'bike_id', 'neighbour_id'],
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook=[
            "set local hnsw.ef_search = " ~ var('hnsw_ef_search'),
            "{{ iterative_scan_setting() }}",
            "{{ create_neighbour_search() }}",
            "set local min_parallel_table_scan_size = 0",
            "set local parallel_leader_participation = off",
        ],
        post_hook=[
            "
            delete from {{ this }} as neighbours
            where not exists (
                select from {{ source('bikematch', 'vector_storage') }} as vectors
                where
                    vectors.bike_id = neighbours.bike_id
                    and vectors.model = neighbours.model
                    and vectors.input_hash = neighbours.input_hash
            )",
            "
            delete from {{ this }} as neighbours
            using {{ ref('int_listings') }} as listings
            where
                listings.bike_id = neighbours.bike_id
                and neighbours.model = {{ sql_literal(var('embedding_model')) }}
                and listings.image_is_shared
                <> coalesce(neighbours.searched_by_title, false)",
        ],
    )
}}
{% set dims = embedding_dims(var('embedding_model')) %}
{#- A table built before searched_by_title has none until this run appends it
    (on_schema_change): its rows were all searched by the whole vector. -#}
{% set stored_columns = [] %}
{% if is_incremental() %}
    {% set stored_columns = adapter.get_columns_in_relation(this) | map(attribute='name') | list %}
{% endif %}

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
    -- A listing showing its shop's placeholder photo (int_listings.image_is_shared) is
    -- looked up by its title: [zeros, text], as a listing without a photo is stored;
    -- by its whole vector it would find the other shops' placeholders first.
    select
        vectors.bike_id,
        vectors.model,
        vectors.input_hash,
        {% if dims is not none -%}
            case
                when listings.image_is_shared
                    then (
                        array_fill(
                            0::real, array[{{ dims }} - vector_dims(vectors.text_embedding)]
                        )
                        || vectors.text_embedding::real []
                    )::halfvec
                else vectors.embedding
            end as embedding,
        {%- else -%}
            vectors.embedding,
        {%- endif %}
        listings.webshop,
        listings.image_is_shared as searched_by_title
    from vectors
    inner join listings on vectors.bike_id = listings.bike_id
    {% if is_incremental() %}
        where not exists (
            select from {{ this }} as done
            where
                done.bike_id = vectors.bike_id
                and done.model = vectors.model
                and done.input_hash = vectors.input_hash
                and listings.image_is_shared = {{
                    'coalesce(done.searched_by_title, false)'
                    if 'searched_by_title' in stored_columns else 'false'
                }}
        )
    {% endif %}
),

{% if dims is not none -%}
searched as (
    -- (a set-returning function in the select list: the subquery is never
    -- flattened, so each listing is searched once)
    select
        bike_id,
        model,
        input_hash,
        searched_by_title,
        {{ neighbour_search_function() }}(embedding, bike_id, webshop) as nearest
    from listings_to_match
),
{%- endif %}

neighbours as (
    {% if dims is none %}
        -- No vectors for this model yet (and no search function): an empty
        -- table of the right shape.
        select
            bike_id,
            model,
            input_hash,
            null::uuid as neighbour_id,
            null::text as neighbour_input_hash,
            null::float8 as similarity,
            searched_by_title
        from listings_to_match
        where false
    {% else %}
        select
            bike_id,
            model,
            input_hash,
            (nearest).neighbour_id,
            (nearest).neighbour_input_hash,
            1 - (nearest).distance as similarity,
            searched_by_title
        from searched
    {% endif %}
)

select * from neighbours
