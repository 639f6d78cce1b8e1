-- Listings that take part in matching: still sold (seen in their shop's latest
-- crawl, within a grace period) and embedded with var('embedding_model').
--
-- text_only: judged by title alone, as a listing without a photo, also where its
-- photo is one its shop shows for at least var('shared_image_listings') of its
-- listings (a "no photo yet" image, a logo): such a photo says nothing about the
-- bike, and two shops' placeholders can look alike. int_vector_neighbours looks
-- such a listing up by its title too.
--
-- price_eur: the price in euros, through stg_exchange_rates, for comparing
-- prices in different currencies; null where the currency has no rate.
--
-- battery_wh, frame_type, model_year, motor, motor_position: what the title says
-- of the product (int_listing_attributes; the plural arrays are what matching
-- compares). rare_codes: the model_codes at most var('code_block_max_listings')
-- listings carry. brands: the brand, through the vocabulary's aliases; brand_as_written:
-- the brand field in lower case, letters and digits only.
--
-- shop_rank: the order master_bikes places shops in. 0 is var('anchor_shop');
-- then the shops of var('shop_priority') in their order, then the others by name.
-- It never depends on row order.

with

listings as (
    select * from {{ ref('stg_scraped_bikes') }}
),

vectors as (
    select * from {{ ref('stg_vector_storage') }}
    where model = {{ sql_literal(var('embedding_model')) }}
),

rates as (
    select * from {{ ref('stg_exchange_rates') }}
),

attributes as (
    select * from {{ ref('int_listing_attributes') }}
),

shop_crawls as (
    select
        webshop,
        max(last_seen_at) as last_crawled_at
    from listings
    group by webshop
),

priorities as (
    -- var('shop_priority'), in its order
    select
        null::text as webshop,
        null::integer as priority
    where false
    {%- for shop in var('shop_priority') %}
        union all
        select
            {{ sql_literal(shop) }} as webshop,
            {{ loop.index }} as priority
    {%- endfor %}
),

shop_ranks as (
    select
        shop_crawls.webshop,
        case
            when shop_crawls.webshop = {{ sql_literal(var('anchor_shop')) }} then 0
            else
                row_number() over (
                    partition by shop_crawls.webshop = {{ sql_literal(var('anchor_shop')) }}
                    order by priorities.priority asc nulls last, shop_crawls.webshop asc
                )
        end as shop_rank
    from shop_crawls
    left join priorities on shop_crawls.webshop = priorities.webshop
),

active_embedded as (
    select
        listings.bike_id,
        listings.webshop,
        listings.url,
        listings.name,
        listings.brand,
        listings.valid_gtin,
        listings.price,
        listings.currency,
        round(listings.price / rates.per_euro, 2) as price_eur,
        listings.image_url,
        listings.availability,
        -- model_codes (title and SKU) agree; title_codes are the title's alone,
        -- short ones (C7) too, which are too common to agree on but do conflict
        -- (conflict_codes: both; codes_conflict). A motor's or battery's number
        -- ("Bafang M420", "Steps EP801") says what the bike has, not which bike
        -- it is: the vocabulary reads it.
        {%- for column, sku, short in [
            ('model_codes', 'listings.sku', false), ('title_codes', 'null', true)
        ] %}
            array(
                select code
                from unnest({{ model_codes('listings.name', sku, short) }}) as code
                where not exists (
                    select from unnest(attributes.attribute_words) as words
                    where strpos(words, code) > 0
                )
            ) as {{ column }},
        {%- endfor %}
        -- The title's bare numbers with the word before them ("powerfly 5"):
        -- Powerfly 5 and Powerfly 7 are two trims (numbers_conflict).
        {{ numbered_words('listings.name') }} as numbered_words,
        attributes.brands,
        attributes.brand_as_written,
        attributes.battery_whs,
        attributes.frame_types,
        attributes.model_years,
        attributes.motors,
        attributes.motor_positions,
        attributes.editions,
        attributes.battery_wh,
        attributes.frame_type,
        attributes.model_year,
        attributes.motor,
        attributes.motor_position,
        attributes.edition,
        shop_ranks.shop_rank,
        vectors.model,
        vectors.input_hash,
        vectors.text_only as stored_text_only,
        listings.image_url is not null
        and count(*) over (partition by listings.webshop, listings.image_url)
        >= {{ var('shared_image_listings') }} as image_is_shared,
        -- The embedder's own definition (bikematch_embedding_source): false while a changed
        -- title or image waits to be embedded again.
        (
            vectors.source_hash
            is not distinct from bikematch_embedding_source(listings.name, listings.image_url)
        ) as vector_is_current,
        listings.webshop = {{ sql_literal(var('anchor_shop')) }} as is_anchor
    from listings
    inner join vectors on listings.bike_id = vectors.bike_id
    inner join shop_crawls on listings.webshop = shop_crawls.webshop
    inner join shop_ranks on listings.webshop = shop_ranks.webshop
    inner join attributes on listings.bike_id = attributes.bike_id
    left join rates on listings.currency = rates.currency
    where
        listings.last_seen_at >= shop_crawls.last_crawled_at
        - make_interval(hours => {{ var('listing_grace_hours') }})
),

code_counts as (
    -- A model number few listings carry identifies; a common one ("USB3") does not.
    select
        codes.code,
        count(*) as listings
    from active_embedded
    cross join unnest(active_embedded.model_codes) as codes (code)
    group by codes.code
),

rare as (
    select
        active_embedded.bike_id,
        array_agg(codes.code order by codes.code) as rare_codes
    from active_embedded
    cross join unnest(active_embedded.model_codes) as codes (code)
    inner join code_counts on codes.code = code_counts.code
    where code_counts.listings <= {{ var('code_block_max_listings') }}
    group by active_embedded.bike_id
)

select
    active_embedded.*,
    active_embedded.stored_text_only or active_embedded.image_is_shared as text_only,
    coalesce(rare.rare_codes, '{}') as rare_codes,
    array(
        select distinct codes.code
        from unnest(active_embedded.model_codes || active_embedded.title_codes) as codes (code)
        order by codes.code
    ) as conflict_codes,
    array(
        select {{ code_kind('codes.code') }}
        from (
            select distinct all_codes.code
            from unnest(active_embedded.model_codes || active_embedded.title_codes)
                as all_codes (code)
        ) as codes
        order by codes.code
    ) as conflict_code_kinds
from active_embedded
left join rare on active_embedded.bike_id = rare.bike_id
