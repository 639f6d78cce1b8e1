-- Pairs of active listings of different shops that may be the same product:
-- nearest neighbours at or above var('match_threshold'), in both directions,
-- and pairs with the same valid GTIN whatever their similarity. Pairs whose
-- valid GTINs differ are never candidates.
--
-- A pair's similarity is the cosine of the combined [image, text] embeddings
-- the search found, except: where either listing has no image it is the text
-- cosine alone (not diluted by an empty image half), and with
-- var('image_weight') set it is recomputed from the two halves with that
-- weight (for calibration; the search itself used the stored combination).
--
-- Identifiers are evidence too (var('identifier_evidence')): a shared
-- model-number token raises the pair's score, different model numbers of the
-- same kind (C380 vs C7, 400WH vs 625WH), different brands or a price gap
-- beyond var('price_ratio_limit') lower it. A pair is a candidate when its
-- score reaches var('match_threshold'); `matched_via` spells out what counted.
-- Listings sharing a rare model number are candidates too, found or not by
-- the similarity search.
{% set evidence = var('identifier_evidence') %}
{% set bonus = var('code_agree_bonus') if evidence else 0 %}

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

{% if evidence -%}
    listing_codes as (
        select
            bike_id,
            webshop,
            unnest(model_codes) as code
        from listings
    ),

    rare_codes as (
    -- A model number few listings carry identifies; a common one ("USB3") does not.
        select code
        from listing_codes
        group by code
        having count(*) <= {{ var('code_block_max_listings') }}
    ),

    listing_rare_codes as (
        select
            listing_codes.bike_id,
            array_agg(listing_codes.code) as codes
        from listing_codes
        where listing_codes.code in (select rare_codes.code from rare_codes)
        group by listing_codes.bike_id
    ),

    code_pairs as (
    -- Listings of different shops sharing a rare model number are candidates
    -- even when the similarity search did not bring them together.
        select distinct
            listing.bike_id,
            neighbour.bike_id as neighbour_id
        from listing_codes as listing
        inner join listing_codes as neighbour
            on listing.code = neighbour.code and listing.webshop <> neighbour.webshop
        where listing.code in (select rare_codes.code from rare_codes)
    ),
{%- endif %}

found_pairs as (
    -- Similarity is symmetric: a listing found as another's neighbour is a
    -- candidate for both, so a new listing can attract older ones.
    select
        bike_id,
        neighbour_id,
        similarity as search_similarity,
        'embedding' as evidence
    from current_neighbours
    union
    select
        neighbour_id as bike_id,
        bike_id as neighbour_id,
        similarity as search_similarity,
        'embedding' as evidence
    from current_neighbours
    {% if evidence -%}
        union
        select
            bike_id,
            neighbour_id,
            null::float8 as search_similarity,
            'embedding' as evidence
        from code_pairs
    {%- endif %}
    union
    select
        listing.bike_id,
        neighbour.bike_id as neighbour_id,
        null::float8 as search_similarity,
        'gtin' as evidence
    from listings as listing
    inner join listings as neighbour
        on
            listing.valid_gtin = neighbour.valid_gtin
            and listing.webshop <> neighbour.webshop
),

pairs as (
    -- One row per pair; GTIN evidence wins over similarity.
    select distinct on (bike_id, neighbour_id) *
    from found_pairs
    order by
        bike_id asc,
        neighbour_id asc,
        evidence = 'gtin' desc,
        search_similarity is null asc
),

to_score as (
    select
        pairs.bike_id,
        pairs.neighbour_id,
        pairs.evidence,
        pairs.search_similarity,
        listing.text_only or neighbour.text_only as text_only
    from pairs
    inner join listings as listing on pairs.bike_id = listing.bike_id
    inner join listings as neighbour on pairs.neighbour_id = neighbour.bike_id
    {% if var('image_weight', none) is none -%}
        -- Only pairs that can still pass need their vectors.
        where
            pairs.evidence = 'gtin'
            or pairs.search_similarity is null
            or pairs.search_similarity >= {{ var('match_threshold') }} - {{ bonus }}
            or listing.text_only
            or neighbour.text_only
    {%- endif %}
),

scored as (
    select
        to_score.bike_id,
        to_score.neighbour_id,
        to_score.evidence,
        case
            {% if var('image_weight', none) is none -%}
                when not to_score.text_only and to_score.search_similarity is not null
                    then to_score.search_similarity
            {%- endif %}
            when to_score.text_only
                then 1 - (listing_vector.text_embedding <=> neighbour_vector.text_embedding)
            else
                {{ var('image_weight', 0.5) }}
                * (1 - (listing_vector.image_embedding <=> neighbour_vector.image_embedding))
                + (1 - {{ var('image_weight', 0.5) }})
                * (1 - (listing_vector.text_embedding <=> neighbour_vector.text_embedding))
        end as similarity
    from to_score
    inner join vectors as listing_vector on to_score.bike_id = listing_vector.bike_id
    inner join vectors as neighbour_vector on to_score.neighbour_id = neighbour_vector.bike_id
),

judged as (
    select
        scored.bike_id,
        scored.neighbour_id,
        scored.similarity,
        scored.evidence,
        listing.webshop,
        listing.url,
        listing.shop_rank,
        listing.valid_gtin,
        neighbour.webshop as neighbour_webshop,
        neighbour.url as neighbour_url,
        neighbour.shop_rank as neighbour_shop_rank,
        neighbour.is_anchor as neighbour_is_anchor,
        {% if evidence -%}
            -- Only rare model numbers count ("1993UP" on forty listings says
            -- nothing); one may extend the other (MC359LL vs MC359LLA).
            coalesce(exists (
                select from unnest(listing_codes.codes) as mine
                inner join unnest(neighbour_codes.codes) as theirs
                    on
                        mine = theirs
                        or (
                            least(length(mine), length(theirs)) >= 5
                            and (mine like theirs || '%' or theirs like mine || '%')
                        )
            ), false) as codes_agree,
            -- Different model numbers of the same kind, and none of that kind
            -- shared: C380 vs C7, 400WH vs 625WH (common or rare alike).
            exists(
                select from unnest(listing.model_codes) as mine
                inner join unnest(neighbour.model_codes) as theirs
                    on
                        {{ code_kind('mine') }} = {{ code_kind('theirs') }}
                        and mine <> theirs
                where not ({{ code_kind('mine') }} = any(
                    select {{ code_kind('shared') }}
                    from unnest(listing.model_codes) as shared
                    where shared = any(neighbour.model_codes)
                ))
            ) as codes_conflict,
            coalesce(listing.brand_key <> neighbour.brand_key, false) as brand_conflict,
            coalesce(
                greatest(listing.price, neighbour.price)
                > {{ var('price_ratio_limit') }} * least(listing.price, neighbour.price),
                false
            ) as price_conflict
        {%- else -%}
            false as codes_agree,
            false as codes_conflict,
            false as brand_conflict,
            false as price_conflict
        {%- endif %}
    from scored
    inner join listings as listing on scored.bike_id = listing.bike_id
    inner join listings as neighbour on scored.neighbour_id = neighbour.bike_id
    {% if evidence -%}
        left join listing_rare_codes as listing_codes on scored.bike_id = listing_codes.bike_id
        left join listing_rare_codes as neighbour_codes
            on scored.neighbour_id = neighbour_codes.bike_id
    {%- endif %}
    where
        listing.webshop <> neighbour.webshop
        and (
            listing.valid_gtin is null
            or neighbour.valid_gtin is null
            or listing.valid_gtin = neighbour.valid_gtin
        )
),

candidates as (
    select
        judged.*,
        judged.similarity
        + case when judged.codes_agree then {{ bonus }} else 0 end
        - case when judged.codes_conflict then {{ var('code_conflict_penalty') }} else 0 end
        - case when judged.brand_conflict then {{ var('brand_conflict_penalty') }} else 0 end
        - case when judged.price_conflict then {{ var('price_conflict_penalty') }} else 0 end
            as score,
        judged.evidence
        || case when judged.codes_agree then '+codes' else '' end
        || case when judged.codes_conflict then '-codes' else '' end
        || case when judged.brand_conflict then '-brand' else '' end
        || case when judged.price_conflict then '-price' else '' end
            as matched_via
    from judged
)

select * from candidates
where
    evidence = 'gtin'
    or score >= {{ var('match_threshold') }}
