-- Pairs of active listings of different shops that may be the same product:
-- nearest neighbours at or above var('match_threshold'), in both directions,
-- and pairs with the same valid GTIN whatever their similarity. Pairs whose
-- valid GTINs differ are never candidates.
{% set dims = embedding_dims(var('embedding_model')) %}

with

listings as (
    select * from {{ ref('int_listings') }}
),

neighbours as (
    select * from {{ ref('int_vector_neighbours') }}
    where model = {{ sql_literal(var('embedding_model')) }}
),

vectors as (
    select * from {{ ref('stg_vector_storage') }}
    where model = {{ sql_literal(var('embedding_model')) }}
),

current_neighbours as (
    -- Drop pairs looked up for an older vector of either listing.
    select
        neighbours.bike_id,
        neighbours.neighbour_id,
        neighbours.similarity
    from neighbours
    inner join listings as listing
        on
            neighbours.bike_id = listing.bike_id
            and neighbours.input_hash = listing.input_hash
    inner join listings as neighbour
        on
            neighbours.neighbour_id = neighbour.bike_id
            and neighbours.neighbour_input_hash = neighbour.input_hash
),

embedding_pairs as (
    -- Similarity is symmetric: a listing found as another's neighbour is a
    -- candidate for both, so a new listing can attract older ones.
    select
        bike_id,
        neighbour_id,
        similarity,
        'embedding' as evidence
    from current_neighbours
    where similarity >= {{ var('match_threshold') }}
    union
    select
        neighbour_id as bike_id,
        bike_id as neighbour_id,
        similarity,
        'embedding' as evidence
    from current_neighbours
    where similarity >= {{ var('match_threshold') }}
),

gtin_pairs as (
    select
        listing.bike_id,
        neighbour.bike_id as neighbour_id,
        {% if dims is none -%}
            null::float8 as similarity,
        {%- else -%}
            1 - (
                listing_vector.embedding::halfvec({{ dims }})
                <=> neighbour_vector.embedding::halfvec({{ dims }})
            ) as similarity,
        {%- endif %}
        'gtin' as evidence
    from listings as listing
    inner join listings as neighbour
        on
            listing.valid_gtin = neighbour.valid_gtin
            and listing.webshop <> neighbour.webshop
    inner join vectors as listing_vector on listing.bike_id = listing_vector.bike_id
    inner join vectors as neighbour_vector on neighbour.bike_id = neighbour_vector.bike_id
),

pairs as (
    -- One row per pair; GTIN evidence wins over similarity.
    select distinct on (bike_id, neighbour_id) *
    from (
        select * from gtin_pairs
        union all
        select * from embedding_pairs
    ) as all_pairs
    order by bike_id asc, neighbour_id asc, evidence = 'gtin' desc, similarity desc
),

candidates as (
    select
        pairs.bike_id,
        pairs.neighbour_id,
        pairs.similarity,
        pairs.evidence,
        listing.webshop,
        listing.url,
        listing.shop_rank,
        listing.valid_gtin,
        neighbour.webshop as neighbour_webshop,
        neighbour.url as neighbour_url,
        neighbour.shop_rank as neighbour_shop_rank,
        neighbour.is_anchor as neighbour_is_anchor
    from pairs
    inner join listings as listing on pairs.bike_id = listing.bike_id
    inner join listings as neighbour on pairs.neighbour_id = neighbour.bike_id
    where
        listing.webshop <> neighbour.webshop
        and (
            listing.valid_gtin is null
            or neighbour.valid_gtin is null
            or listing.valid_gtin = neighbour.valid_gtin
        )
)

select * from candidates
