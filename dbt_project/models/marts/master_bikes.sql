{#-
    Which cluster (product) each listing belongs to.

    Shops are processed one at a time in ordered_shops() order. The anchor
    shop's listings seed clusters. Each later shop's listings join the cluster
    of their preferred candidate among the listings already placed: equal
    valid GTIN first, then an anchor listing, then the highest score (the
    similarity with the identifier evidence of int_candidate_matches),
    then the neighbour's (webshop, url) so that ties never depend on row
    order. A cluster takes at most var('max_listings_per_shop') listings of a
    shop (the best matches); a listing with no candidate, or that lost its
    place, seeds a cluster of its own, so bikes the anchor shop doesn't sell
    still merge across the other shops. A listing never joins a cluster
    holding a different valid GTIN.

    Incremental: the assignment is recomputed from the stored candidate pairs
    (cheap), and only rows that changed are written, so a rerun with no new
    data changes no row and clustered_at says when a listing last moved.
    Listings that left their shop keep their last row here; the marts drop them.
-#}
{{
    config(
        materialized='incremental',
        unique_key='bike_id',
        incremental_strategy='delete+insert',
        pre_hook=[
            "set enable_nestloop = off",
            "set work_mem = '256MB'",
        ],
        post_hook="reset enable_nestloop",
    )
}}
{% set shops = ordered_shops() %}

with

listings as (
    select * from {{ ref('int_listings') }}
),

-- (unused, and noqa, when only the anchor shop has listings)
candidates as (  -- noqa: ST03
    select * from {{ ref('int_candidate_matches') }}
),

placed_0 as (
    -- The anchor shop: every listing seeds its own cluster.
    select
        bike_id,
        {{ cluster_id('webshop', 'url') }} as cluster_id,
        'anchor' as matched_via,
        null::uuid as matched_bike_id,
        null::float8 as similarity,
        null::float8 as score,
        valid_gtin
    from listings
    where shop_rank = 0
),

{% for rank in range(1, shops | length) %}

    cluster_gtins_{{ rank }} as (
        select
            cluster_id,
            max(valid_gtin) as cluster_gtin
        from placed_{{ rank - 1 }}
        group by cluster_id
    ),

    options_{{ rank }} as (
    -- Clusters this shop's listings could join, best first.
        select
            candidates.bike_id,
            placed.cluster_id,
            candidates.neighbour_id as matched_bike_id,
            candidates.similarity,
            candidates.score,
            candidates.evidence,
            candidates.matched_via,
            candidates.url,
            row_number() over (
                partition by candidates.bike_id
                order by
                    candidates.evidence = 'gtin' desc,
                    candidates.neighbour_is_anchor desc,
                    candidates.score desc,
                    candidates.neighbour_webshop asc,
                    candidates.neighbour_url asc
            ) as preference
        from candidates
        inner join placed_{{ rank - 1 }} as placed on candidates.neighbour_id = placed.bike_id
        inner join cluster_gtins_{{ rank }} as cluster_gtins
            on placed.cluster_id = cluster_gtins.cluster_id
        where
            candidates.shop_rank = {{ rank }}
            and (
                candidates.valid_gtin is null
                or cluster_gtins.cluster_gtin is null
                or candidates.valid_gtin = cluster_gtins.cluster_gtin
            )
    ),

    choices_{{ rank }} as (
    -- Each listing's first choice; the cluster keeps its best few from this shop.
        select
            *,
            row_number() over (
                partition by cluster_id
                order by evidence = 'gtin' desc, score desc, url asc
            ) as place_in_cluster
        from options_{{ rank }}
        where preference = 1
    ),

    placed_{{ rank }} as (
        select * from placed_{{ rank - 1 }}
        union all
        select
            listings.bike_id,
            case
                when choices.place_in_cluster <= {{ var('max_listings_per_shop') }}
                    then choices.cluster_id
                else {{ cluster_id('listings.webshop', 'listings.url') }}
            end as cluster_id,
            case
                when choices.place_in_cluster <= {{ var('max_listings_per_shop') }}
                    then choices.matched_via
                else 'seed'
            end as matched_via,
            case
                when choices.place_in_cluster <= {{ var('max_listings_per_shop') }}
                    then choices.matched_bike_id
            end as matched_bike_id,
            case
                when choices.place_in_cluster <= {{ var('max_listings_per_shop') }}
                    then choices.similarity
            end as similarity,
            case
                when choices.place_in_cluster <= {{ var('max_listings_per_shop') }}
                    then choices.score
            end as score,
            listings.valid_gtin
        from listings
        left join choices_{{ rank }} as choices on listings.bike_id = choices.bike_id
        where listings.shop_rank = {{ rank }}
    ),

{% endfor %}

assignments as (
    select
        placed.cluster_id,
        placed.bike_id,
        listings.webshop,
        placed.matched_via,
        placed.matched_bike_id,
        placed.similarity,
        placed.score,
        listings.model,
        listings.input_hash
    from placed_{{ shops | length - 1 }} as placed
    inner join listings on placed.bike_id = listings.bike_id
),

changed as (
    select
        assignments.*,
        now() as clustered_at
    from assignments
    {% if is_incremental() %}
        where not exists (
            select from {{ this }} as previous
            where
                previous.bike_id = assignments.bike_id
                and previous.cluster_id = assignments.cluster_id
                and previous.matched_via = assignments.matched_via
                and previous.matched_bike_id is not distinct from assignments.matched_bike_id
                and previous.similarity is not distinct from assignments.similarity
                and previous.score is not distinct from assignments.score
                and previous.model = assignments.model
                and previous.input_hash = assignments.input_hash
        )
    {% endif %}
)

select * from changed
