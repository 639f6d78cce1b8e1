{#-
    Which cluster (product) each listing belongs to.

    The assignment is bikematch_assign_clusters()
    (sql/functions/04_cluster_assignment.sql), a loop over the shops in shop_rank order: the anchor shop's listings seed
    clusters; each later shop's listings join the cluster of their preferred
    candidate among the listings already placed (a link by hand, then an equal
    valid GTIN, then the best fit), at most var('max_listings_per_shop') of a
    shop to a cluster, over var('assignment_rounds') rounds of claims; a listing
    left without a cluster seeds its own. A listing never joins a cluster where
    any member already placed contradicts it or was unlinked from it
    (joining_blocked). A listing that fits the clusters of two different products
    about equally well (var('variant_score_window'); rival_products) joins the one
    clearly nearer in price (var('variant_price_margin')), or stays alone,
    matched_via 'ambiguous' (a rival can be one it fits a little below the
    threshold: int_candidate_matches.passes false). Once every shop is placed, a
    listing that joined by its similarity or seeded a cluster decides so again
    among every cluster it fits, those seeded after it included.

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
        pre_hook=["set local work_mem = '256MB'"],
    )
}}

with

listings as (
    select * from {{ ref('int_listings') }}
),

assigned as (
    select * from bikematch_assign_clusters(
        {{ sql_literal(ref('int_listings')) }}::regclass,
        {{ sql_literal(ref('int_candidate_matches')) }}::regclass,
        {{ var('max_listings_per_shop') }},
        {{ var('assignment_rounds') }},
        {{ sql_literal(joining_blocked('listing', 'member', 'candidate')) }},
        {{ sql_literal(rival_products('first_member', 'second_member')) }},
        {{ var('variant_score_window') }},
        {{ var('variant_price_margin') }}
    )
),

assignments as (
    select
        assigned.cluster_id,
        assigned.bike_id,
        listings.webshop,
        assigned.matched_via,
        assigned.matched_bike_id,
        assigned.similarity,
        assigned.score,
        listings.model,
        listings.input_hash
    from assigned
    inner join listings on assigned.bike_id = listings.bike_id
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
