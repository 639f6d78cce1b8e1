{#-
    One row saying how the matching judges two listings (by bike_id), for `bikematch
    explain`: their similarities, what each title states, each piece of evidence and
    conflict, the score and the decision with its rule. It applies the same macros as
    int_candidate_matches and master_bikes, to the tables the last build left.
-#}
{% macro explain_pair(first_id, second_id) -%}
{%- set threshold = var('match_threshold') -%}
{%- set bonus = var('code_agree_bonus') if var('identifier_evidence') else 0 -%}
with

listings as (
    select * from {{ ref('int_listings') }}
),

pair as (
    select
        first_listing.bike_id as first_id,
        second_listing.bike_id as second_id,
        first_listing.webshop = second_listing.webshop as same_shop,
        first_listing.rare_codes as first_rare_codes,
        second_listing.rare_codes as second_rare_codes,
        1 - (first_vector.image_embedding <=> second_vector.image_embedding) as image_similarity,
        1 - (first_vector.text_embedding <=> second_vector.text_embedding) as text_similarity,
        1 - (first_vector.embedding <=> second_vector.embedding) as combined_similarity,
        first_listing.text_only or second_listing.text_only as text_only,
        {{ attribute_conflicts('first_listing', 'second_listing') }} as conflicts,
        {{ attribute_agreements('first_listing', 'second_listing') }} as agreements,
        {{ brand_conflict('first_listing', 'second_listing') }} as brand_conflict,
        {{ price_conflict('first_listing', 'second_listing') }} as price_conflict,
        {{ price_ratio('first_listing', 'second_listing') }} as price_ratio,
        coalesce(first_listing.valid_gtin = second_listing.valid_gtin, false) as same_gtin,
        case
            when {{ decided_by_hand('first_listing', 'second_listing', 'link') }} then 'link'
            when {{ decided_by_hand('first_listing', 'second_listing', 'unlink') }} then 'unlink'
        end as decision_by_hand,
        (
            select candidates.matched_via from {{ ref('int_candidate_matches') }} as candidates
            where
                candidates.bike_id = first_listing.bike_id
                and candidates.neighbour_id = second_listing.bike_id
                and candidates.passes
        ) as candidate_via,
        first_cluster.cluster_id as first_cluster_id,
        second_cluster.cluster_id as second_cluster_id,
        first_cluster.matched_via as first_matched_via,
        second_cluster.matched_via as second_matched_via
    from listings as first_listing
    cross join listings as second_listing
    inner join {{ ref('stg_vector_storage') }} as first_vector
        on
            first_listing.bike_id = first_vector.bike_id
            and first_vector.model = {{ sql_literal(var('embedding_model')) }}
    inner join {{ ref('stg_vector_storage') }} as second_vector
        on
            second_listing.bike_id = second_vector.bike_id
            and second_vector.model = {{ sql_literal(var('embedding_model')) }}
    left join {{ ref('master_bikes') }} as first_cluster
        on first_listing.bike_id = first_cluster.bike_id
    left join {{ ref('master_bikes') }} as second_cluster
        on second_listing.bike_id = second_cluster.bike_id
    where
        first_listing.bike_id = {{ sql_literal(first_id) }}::uuid
        and second_listing.bike_id = {{ sql_literal(second_id) }}::uuid
),

scored as (
    select
        *,
        {{ codes_agree('first_rare_codes', 'second_rare_codes') }} as codes_agree,
        case when text_only then text_similarity else combined_similarity end as similarity
    from pair
)

select
    *,
    {{ pair_score('similarity', 'codes_agree', 'brand_conflict', 'price_conflict') }} as score,
    {{ threshold }}::float8 as threshold,
    {{ bonus }}::float8 as code_agree_bonus,
    {{ var('brand_conflict_penalty') }}::float8 as brand_conflict_penalty,
    {{ var('price_conflict_penalty') }}::float8 as price_conflict_penalty
from scored
{%- endmacro %}
