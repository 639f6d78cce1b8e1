-- Pairs of active listings of different shops that may be the same product:
-- nearest neighbours whose score reaches var('match_threshold'), in both
-- directions; pairs with the same valid GTIN (a GTIN names one size and colour of
-- one product: equal ones are the same product, different ones prove nothing);
-- and pairs an analyst linked by hand (match_links). A pair an analyst unlinked is
-- never a candidate.
--
-- A pair's similarity is the cosine of the combined [image, text] embeddings
-- the search found, except: where either listing has no image, or one its shop
-- shows for many listings (int_listings.text_only), it is the text cosine alone
-- (not diluted by an empty image half, nor lifted by a placeholder), and with
-- var('image_weight') set it is recomputed from the two halves with that
-- weight (for calibration; the search itself used the stored combination).
--
-- Conflicts decide: two listings that both state a battery capacity, frame
-- type, model year, motor, motor position or brand (of those ebike_vocabulary
-- knows, through its aliases) and disagree, whose model lines carry other
-- edition words (Plus, Pro...), or that carry
-- different model numbers of one kind (Grenoble C7 vs C8), are different
-- products whatever their similarity (`conflicts` names what they disagree on;
-- such a pair is no candidate unless GTIN or a link says otherwise).
-- Identifiers are evidence too (var('identifier_evidence')): a shared rare
-- model number raises the pair's score; different brands or a price gap beyond
-- var('price_ratio_limit') (in euros where the currencies differ and both have
-- a rate; not judged where one has none) lower it. `matched_via` spells out what
-- counted. Listings sharing a rare model number are candidates too, found or
-- not by the similarity search.
--
-- Everything is symmetric, so each pair is judged once, as (first_id,
-- second_id) with first_id < second_id, and written in both directions.
-- price_ratio is the listing's price over the neighbour's, like for like: each
-- shop's price level (against the anchor shop's, from the pairs that are each
-- other's best match) taken out. The assignment compares rival products by it.
{% set evidence = var('identifier_evidence') %}
{% set bonus = var('code_agree_bonus') if evidence else 0 %}
{#- Pairs down to this score are kept, not passing (`passes` false): the assignment
    reads them only to see a rival product a listing fits about as well, one that
    states what the listing leaves out (its year, its motor), so a near pair is kept
    in the direction from the listing that says less. -#}
{% set floor = var('match_threshold') ~ ' - ' ~ var('variant_score_window') %}
{% set image_weight = var('image_weight', none) %}
{{ config(pre_hook="set local work_mem = '256MB'") }}

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

links as (
    select * from {{ ref('stg_match_links') }}
),

listing_rare_codes as (
    select
        listings.bike_id,
        listings.webshop,
        code
    from listings
    cross join unnest(listings.rare_codes) as code
),

text_only_listings as (
    select bike_id from listings
    where text_only
),

found_pairs as (
    -- Each way a pair was found, with first_id < second_id: by the similarity
    -- search from either listing (a listing found as another's neighbour is a
    -- candidate for both, so a new listing can attract older ones), by a
    -- shared rare model number, or by an equal valid GTIN.
    select
        least(bike_id, neighbour_id) as first_id,
        greatest(bike_id, neighbour_id) as second_id,
        case when bike_id < neighbour_id then input_hash else neighbour_input_hash end
            as first_hash,
        case when bike_id < neighbour_id then neighbour_input_hash else input_hash end
            as second_hash,
        similarity as search_similarity,
        false as same_gtin,
        false as linked
    from neighbours
    {% if image_weight is none -%}
        -- Only pairs that can still pass (the floor `judged` applies, here before
        -- the grouping: most of a listing's neighbours are far below it). A
        -- text-only listing's pairs are judged on their text cosine, which the
        -- combined search similarity says nothing about: all of them go on.
        where
            similarity >= {{ floor }} - {{ bonus }}
            or bike_id in (select text_only_listings.bike_id from text_only_listings)
            or neighbour_id in (select text_only_listings.bike_id from text_only_listings)
    {%- endif %}
    {% if evidence -%}
        union all
        select distinct
            listing.bike_id as first_id,
            neighbour.bike_id as second_id,
            null::text as first_hash,
            null::text as second_hash,
            null::float8 as search_similarity,
            false as same_gtin,
            false as linked
        from listing_rare_codes as listing
        inner join listing_rare_codes as neighbour
            on
                listing.code = neighbour.code
                and listing.webshop <> neighbour.webshop
                and listing.bike_id < neighbour.bike_id
    {%- endif %}
    union all
    select
        listing.bike_id as first_id,
        neighbour.bike_id as second_id,
        null::text as first_hash,
        null::text as second_hash,
        null::float8 as search_similarity,
        true as same_gtin,
        false as linked
    from listings as listing
    inner join listings as neighbour
        on
            listing.valid_gtin = neighbour.valid_gtin
            and listing.webshop <> neighbour.webshop
            and listing.bike_id < neighbour.bike_id
    union all
    select
        links.bike_id as first_id,
        links.other_id as second_id,
        null::text as first_hash,
        null::text as second_hash,
        null::float8 as search_similarity,
        false as same_gtin,
        true as linked
    from links
    where links.decision = 'link' and links.bike_id < links.other_id
),

pairs as (
    -- One row per pair of active listings. A search result for an older
    -- vector of either listing no longer counts.
    select
        found_pairs.first_id,
        found_pairs.second_id,
        bool_or(found_pairs.same_gtin) as same_gtin,
        bool_or(found_pairs.linked) as linked,
        max(found_pairs.search_similarity) filter (
            where
            found_pairs.first_hash = first_listing.input_hash
            and found_pairs.second_hash = second_listing.input_hash
        ) as search_similarity
    from found_pairs
    inner join listings as first_listing on found_pairs.first_id = first_listing.bike_id
    inner join listings as second_listing on found_pairs.second_id = second_listing.bike_id
    group by found_pairs.first_id, found_pairs.second_id
    having bool_or(
        found_pairs.first_hash is null
        or (
            found_pairs.first_hash = first_listing.input_hash
            and found_pairs.second_hash = second_listing.input_hash
        )
    )
),

judged as (
    select
        pairs.first_id,
        pairs.second_id,
        case
            when pairs.linked then 'link'
            when pairs.same_gtin then 'gtin'
            else 'embedding'
        end as evidence,
        case
            {% if image_weight is none -%}
                when
                    not first_listing.text_only
                    and not second_listing.text_only
                    and pairs.search_similarity is not null
                    then pairs.search_similarity
            {%- endif %}
            when first_listing.text_only or second_listing.text_only
                then 1 - (first_vector.text_embedding <=> second_vector.text_embedding)
            else
                {{ image_weight if image_weight is not none else 0.5 }}
                * (1 - (first_vector.image_embedding <=> second_vector.image_embedding))
                + (1 - {{ image_weight if image_weight is not none else 0.5 }})
                * (1 - (first_vector.text_embedding <=> second_vector.text_embedding))
        end as similarity,
        -- The photos' own cosine, which a shop's wording does not move: two
        -- variants of one model line look alike however the titles differ.
        case
            when not first_listing.text_only and not second_listing.text_only
                then 1 - (first_vector.image_embedding <=> second_vector.image_embedding)
        end as image_similarity,
        first_listing.webshop as first_webshop,
        first_listing.url as first_url,
        first_listing.shop_rank as first_shop_rank,
        first_listing.valid_gtin as first_valid_gtin,
        first_listing.is_anchor as first_is_anchor,
        second_listing.webshop as second_webshop,
        second_listing.url as second_url,
        second_listing.shop_rank as second_shop_rank,
        second_listing.valid_gtin as second_valid_gtin,
        second_listing.is_anchor as second_is_anchor,
        {{ states_more('first_listing', 'second_listing') }} as first_states_more,
        {{ states_more('second_listing', 'first_listing') }} as second_states_more,
        {{ attribute_conflicts('first_listing', 'second_listing') }} as conflicts,
        {% if evidence -%}
            {{ codes_agree('first_listing.rare_codes', 'second_listing.rare_codes') }}
                as codes_agree,
            {{ brand_conflict('first_listing', 'second_listing') }}
                as brand_conflict,
            {{ price_conflict('first_listing', 'second_listing') }} as price_conflict,
        {%- else -%}
            false as codes_agree,
            false as brand_conflict,
            false as price_conflict,
        {%- endif %}
        {{ price_ratio('first_listing', 'second_listing') }} as price_ratio,
        {{ attribute_agreements('first_listing', 'second_listing') }} as agreements
    from pairs
    inner join listings as first_listing on pairs.first_id = first_listing.bike_id
    inner join listings as second_listing on pairs.second_id = second_listing.bike_id
    inner join vectors as first_vector on pairs.first_id = first_vector.bike_id
    inner join vectors as second_vector on pairs.second_id = second_vector.bike_id
    where
        first_listing.webshop <> second_listing.webshop
        and not {{ decided_by_hand('first_listing', 'second_listing', 'unlink') }}
        {% if image_weight is none -%}
            -- Only pairs that can still pass (or be kept near) need their
            -- similarity worked out.
            and (
                pairs.same_gtin
                or pairs.linked
                or pairs.search_similarity is null
                or pairs.search_similarity >= {{ floor }} - {{ bonus }}
                or first_listing.text_only
                or second_listing.text_only
            )
        {%- endif %}
),

scored as (
    select
        *,
        {{ pair_score('similarity', 'codes_agree', 'brand_conflict', 'price_conflict') }}
            as score,
        evidence
        || case when codes_agree then '+codes' else '' end
        || case when brand_conflict then '-brand' else '' end
        || case when price_conflict then '-price' else '' end
            as matched_via
    from judged
),

kept as (
    select
        *,
        evidence in ('link', 'gtin') or score >= {{ var('match_threshold') }} as passes
    from scored
    where
        evidence in ('link', 'gtin')
        or (
            conflicts is null
            and (
                score >= {{ var('match_threshold') }}
                or (score >= {{ floor }} and (first_states_more or second_states_more))
            )
        )
),

passing as (
    select * from kept
    where passes
),

anchor_pairs as (
    -- Passing pairs with a listing of the anchor shop: the other shop, and the log
    -- of its listing's price over the anchor listing's.
    select
        case when first_is_anchor then second_id else first_id end as other_id,
        case when first_is_anchor then first_id else second_id end as anchor_id,
        case when first_is_anchor then second_webshop else first_webshop end as webshop,
        case when first_is_anchor then -ln(price_ratio) else ln(price_ratio) end as log_ratio,
        score
    from passing
    where (first_is_anchor or second_is_anchor) and price_ratio > 0
),

mutual_best as (
    select
        *,
        row_number() over (
            partition by anchor_id, webshop order by score desc, other_id asc
        ) as anchor_choice,
        row_number() over (partition by other_id order by score desc, anchor_id asc) as other_choice
    from anchor_pairs
),

shop_price_levels as (
    -- How a shop prices the products it shares with the anchor shop: the median
    -- log price ratio of the pairs that are each other's best match (an outlet 7%
    -- cheaper: ln 0.93). Known from var('price_level_min_pairs') such pairs on;
    -- a shop without them counts as priced like the anchor shop.
    select
        webshop,
        percentile_cont(0.5) within group (order by log_ratio) as price_level
    from mutual_best
    where anchor_choice = 1 and other_choice = 1
    group by webshop
    having count(*) >= {{ var('price_level_min_pairs') }}
),

levelled as (
    -- The price ratio like for like: each shop's price level taken out, so a
    -- listing's price is compared with what the other shop would ask for the same
    -- product.
    select
        kept.*,
        exp(
            ln(nullif(kept.price_ratio, 0))
            - coalesce(first_level.price_level, 0)
            + coalesce(second_level.price_level, 0)
        ) as level_price_ratio
    from kept
    left join shop_price_levels as first_level
        on kept.first_webshop = first_level.webshop
    left join shop_price_levels as second_level
        on kept.second_webshop = second_level.webshop
),

fitted as (
    -- How well the pair fits, for choosing among a listing's candidates: the
    -- score, plus var('agreement_fit_weight') for each product attribute both
    -- state alike, less var('price_fit_weight') per unit of log price ratio (like
    -- for like). Of two variants a title cannot tell apart (it leaves out the
    -- motor that differs), the one nearer in price is the likelier; of two
    -- listings claiming one place, the one that says more that agrees.
    select
        *,
        score
        + {{ var('agreement_fit_weight') }} * agreements
        - {{ var('price_fit_weight') }} * coalesce(abs(ln(level_price_ratio)), 0) as fit
    from levelled
),

candidates as (
    select
        first_id as bike_id,
        second_id as neighbour_id,
        similarity,
        image_similarity,
        evidence,
        first_webshop as webshop,
        first_url as url,
        first_shop_rank as shop_rank,
        first_valid_gtin as valid_gtin,
        second_webshop as neighbour_webshop,
        second_url as neighbour_url,
        second_shop_rank as neighbour_shop_rank,
        second_is_anchor as neighbour_is_anchor,
        codes_agree,
        conflicts,
        brand_conflict,
        price_conflict,
        score,
        passes,
        fit,
        matched_via,
        level_price_ratio as price_ratio
    from fitted
    where passes or second_states_more
    union all
    select
        second_id as bike_id,
        first_id as neighbour_id,
        similarity,
        image_similarity,
        evidence,
        second_webshop as webshop,
        second_url as url,
        second_shop_rank as shop_rank,
        second_valid_gtin as valid_gtin,
        first_webshop as neighbour_webshop,
        first_url as neighbour_url,
        first_shop_rank as neighbour_shop_rank,
        first_is_anchor as neighbour_is_anchor,
        codes_agree,
        conflicts,
        brand_conflict,
        price_conflict,
        score,
        passes,
        fit,
        matched_via,
        1 / nullif(level_price_ratio, 0) as price_ratio
    from fitted
    where passes or first_states_more
)

select * from candidates
