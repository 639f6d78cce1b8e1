-- What each stored listing's title states about the product, read through the
-- ebike_vocabulary seed: battery capacity (Wh), frame type, model year, motor,
-- motor position, brand and the edition words of its model line (Plus, Pro,
-- Sport...). One row per listing; each attribute is an array of the
-- values the title states (empty: the title does not say), keeping only the most
-- specific ones: a title naming "Bosch Performance Line CX" states
-- {bosch/performance line/cx}, not also {bosch}.
--
-- The brand is read from the listing's brand field, else from its title, through
-- the vocabulary's aliases (brands); brand_as_written keeps the brand field as
-- written (lower case, letters and digits) for brands the vocabulary does not know.
--
-- Incremental: a build reads only the listings whose title or brand changed since
-- their row was derived, and every listing when the vocabulary changed (read_from
-- digests both), so a wording added to the seed applies to listings crawled long
-- ago, and a night with few new listings reads few. The post-hook drops the rows of
-- listings that are gone.
{{
    config(
        materialized='incremental',
        unique_key='bike_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        post_hook=[
            "
            delete from {{ this }} as derived
            where not exists (
                select from {{ ref('stg_scraped_bikes') }} as listings
                where listings.bike_id = derived.bike_id
            )",
        ],
    )
}}

with

vocabulary as (
    select * from {{ ref('ebike_vocabulary') }}
),

vocabulary_digest as (
    select
        md5(
            string_agg(
                concat_ws(
                    chr(31),
                    quote_nullable(attribute),
                    quote_nullable(pattern),
                    quote_nullable(value),
                    quote_nullable(factor::text)
                ),
                chr(30)
                order by attribute, pattern, value
            )
        ) as digest
    from vocabulary
),

all_listings as (
    select
        stored.bike_id,
        lower(stored.name) as title,
        lower(coalesce(nullif(btrim(stored.brand), ''), stored.name)) as brand_text,
        lower(regexp_replace(stored.brand, '[^[:alnum:]]', '', 'g')) as brand_as_written,
        md5(
            concat_ws(
                chr(31),
                vocabulary_digest.digest,
                quote_nullable(stored.name),
                quote_nullable(stored.brand)
            )
        ) as read_from
    from {{ ref('stg_scraped_bikes') }} as stored
    cross join vocabulary_digest
),

listings as (
    select * from all_listings
    {% if is_incremental() %}
        where not exists (
            select from {{ this }} as done
            where
                done.bike_id = all_listings.bike_id
                and done.read_from = all_listings.read_from
        )
    {% endif %}
),

texts as (
    -- What each attribute is read from: the brand from brand_text, the rest from
    -- the title.
    select
        bike_id,
        true as for_brand,
        brand_text as text
    from listings
    union all
    select
        bike_id,
        false as for_brand,
        title as text
    from listings
),

matched as (
    -- One pattern at a time over all listings (the vocabulary is the outer loop),
    -- so each regular expression is compiled once.
    select
        found.bike_id,
        vocabulary.attribute,
        found.words,
        case
            when vocabulary.factor is not null
                then (
                    round(replace(found.stated, ',', '.')::numeric * vocabulary.factor)::bigint
                )::text
            else found.stated
        end as value
    from vocabulary
    cross join lateral (
        -- the value, with \1, \2 standing for the pattern's groups in the match
        select
            texts.bike_id,
            upper(
                regexp_replace(
                    substring(texts.text from '(' || vocabulary.pattern || ')'), '[-/. ]', '', 'g'
                )
            ) as words,
            case
                when strpos(vocabulary.value, '\') > 0
                    then regexp_replace(
                        substring(texts.text from '(' || vocabulary.pattern || ')'),
                        vocabulary.pattern,
                        vocabulary.value
                    )
                else vocabulary.value
            end as stated
        from texts
        where
            texts.for_brand = (vocabulary.attribute = 'brand')
            and texts.text ~ vocabulary.pattern
        -- a fence: the vocabulary stays the outer loop
        offset 0  -- noqa: AM09
    ) as found
),

most_specific as (
    -- A value another value of the same listing refines (bosch under
    -- bosch/performance line) says nothing more.
    select distinct
        matched.bike_id,
        matched.attribute,
        matched.value
    from matched
    where not exists (
        select
        from matched as finer
        where
            finer.bike_id = matched.bike_id
            and finer.attribute = matched.attribute
            and finer.value like matched.value || '/%'
    )
),

stated as (
    select
        bike_id,
        array_agg(value order by value) filter (where attribute = 'battery_wh') as battery_whs,
        array_agg(value order by value) filter (where attribute = 'frame_type') as frame_types,
        array_agg(value order by value) filter (where attribute = 'model_year') as model_years,
        array_agg(value order by value) filter (where attribute = 'motor') as motors,
        array_agg(value order by value) filter (where attribute = 'motor_position')
            as motor_positions,
        array_agg(value order by value) filter (where attribute = 'brand') as brands,
        array_agg(value order by value) filter (where attribute = 'edition') as editions
    from most_specific
    group by bike_id
),

read_words as (
    -- The words the vocabulary read, upper case without separators ("BAFANGM420"):
    -- int_listings takes no model number from them. An edition word is no part of
    -- one ("C7+" still carries the model number C7).
    select
        bike_id,
        array_agg(distinct words) as attribute_words
    from matched
    where attribute not in ('brand', 'edition')
    group by bike_id
)

select
    listings.bike_id,
    coalesce(stated.battery_whs, '{}') as battery_whs,
    coalesce(stated.frame_types, '{}') as frame_types,
    coalesce(stated.model_years, '{}') as model_years,
    coalesce(stated.motors, '{}') as motors,
    coalesce(stated.motor_positions, '{}') as motor_positions,
    coalesce(stated.brands, '{}') as brands,
    coalesce(stated.editions, '{}') as editions,
    listings.brand_as_written,
    -- For reading: the value where the title states one, all of them where it
    -- states several.
    case when cardinality(stated.battery_whs) = 1 then stated.battery_whs[1]::integer end
        as battery_wh,
    array_to_string(stated.frame_types, ' / ') as frame_type,
    case when cardinality(stated.model_years) = 1 then stated.model_years[1]::integer end
        as model_year,
    array_to_string(stated.motors, ' / ') as motor,
    array_to_string(stated.motor_positions, ' / ') as motor_position,
    array_to_string(stated.editions, ' ') as edition,
    coalesce(read_words.attribute_words, '{}') as attribute_words,
    listings.read_from
from listings
left join stated on listings.bike_id = stated.bike_id
left join read_words on listings.bike_id = read_words.bike_id
