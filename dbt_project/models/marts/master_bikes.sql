{#-
    Which cluster (product) each listing belongs to.

    Shops are processed one at a time in ordered_shops() order. The anchor
    shop's listings seed clusters. Each later shop's listings join the cluster
    of their preferred candidate among the listings already placed: equal
    valid GTIN first, then an anchor listing, then the highest score (the
    similarity with the identifier evidence of int_candidate_matches),
    then the neighbour's (webshop, url) so that ties never depend on row
    order. A cluster takes at most var('max_listings_per_shop') listings of a
    shop (the best matches); a listing that lost its place to a better match
    of its own shop tries its next choice, for var('assignment_rounds')
    rounds; a listing left without a cluster seeds one of its own, so bikes
    the anchor shop doesn't sell still merge across the other shops. A
    listing never joins a cluster holding a different valid GTIN.

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
            "set local enable_nestloop = off",
            "set local work_mem = '256MB'",
        ],
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

    won_{{ rank }}_0 as (
        select
            null::uuid as bike_id,
            null::uuid as cluster_id,
            null::uuid as matched_bike_id,
            null::float8 as similarity,
            null::float8 as score,
            null::text as matched_via
        where false
    ),

    {% for round in range(1, var('assignment_rounds') + 1) %}

        filled_{{ rank }}_{{ round }} as (
            select
                cluster_id,
                count(*) as taken
            from won_{{ rank }}_{{ round - 1 }}
            group by cluster_id
        ),

        firsts_{{ rank }}_{{ round }} as (
        -- Each listing not placed yet claims its best cluster that has room left.
            select distinct on (options.bike_id)
                options.*,
                coalesce(filled.taken, 0) as taken
            from options_{{ rank }} as options
            left join filled_{{ rank }}_{{ round }} as filled
                on options.cluster_id = filled.cluster_id
            where
                options.bike_id not in (
                    select won.bike_id from won_{{ rank }}_{{ round - 1 }} as won
                )
                and coalesce(filled.taken, 0) < {{ var('max_listings_per_shop') }}
            order by options.bike_id asc, options.preference asc
        ),

        won_{{ rank }}_{{ round }} as (
        -- A cluster keeps its best claims (GTIN first, then score) while it has room.
            select * from won_{{ rank }}_{{ round - 1 }}
            union all
            select
                ranked.bike_id,
                ranked.cluster_id,
                ranked.matched_bike_id,
                ranked.similarity,
                ranked.score,
                ranked.matched_via
            from (
                select
                    firsts.*,
                    firsts.taken + row_number() over (
                        partition by firsts.cluster_id
                        order by firsts.evidence = 'gtin' desc, firsts.score desc, firsts.url asc
                    ) as place
                from firsts_{{ rank }}_{{ round }} as firsts
            ) as ranked
            where ranked.place <= {{ var('max_listings_per_shop') }}
        ),

    {% endfor %}

    placed_{{ rank }} as (
        select * from placed_{{ rank - 1 }}
        union all
        select
            listings.bike_id,
            coalesce(won.cluster_id, {{ cluster_id('listings.webshop', 'listings.url') }})
                as cluster_id,
            coalesce(won.matched_via, 'seed') as matched_via,
            won.matched_bike_id,
            won.similarity,
            won.score,
            listings.valid_gtin
        from listings
        left join won_{{ rank }}_{{ var('assignment_rounds') }} as won
            on listings.bike_id = won.bike_id
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
