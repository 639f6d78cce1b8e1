{#-
    The identifier evidence of a pair of listings: named predicates over the
    columns int_candidate_matches works out once per listing. Each is a boolean SQL
    expression; the dbt unit tests in int_models.yml pin what each says.
-#}

{#- Two listings share a rare model number, or one extends the other's letters
    (MC359LL vs MC359LLA), or one is the other with a seller's letters before it
    (VER97185 vs 97185, HD527B3 vs 527B3); a code that ends in a digit is not
    agreed with by one that goes on (DSCTX10 vs DSCTX100V, T300 vs T300X may be
    two products). Only
    rare codes count: one on forty listings ("1993UP") says nothing. -#}
{% macro codes_agree(first_rare_codes, second_rare_codes) -%}
    case
        when {{ first_rare_codes }} is null or {{ second_rare_codes }} is null then false
        when {{ first_rare_codes }} && {{ second_rare_codes }} then true
        else exists (
            select from unnest({{ first_rare_codes }}) as mine
            inner join unnest({{ second_rare_codes }}) as theirs
                on
                    mine = theirs
                    or (
                        least(length(mine), length(theirs)) >= 5
                        and (
                            (mine like theirs || '%' and theirs ~ '[A-Z]$')
                            or (theirs like mine || '%' and mine ~ '[A-Z]$')
                            or (
                                length(mine) > length(theirs)
                                and right(mine, length(theirs)) = theirs
                                and left(mine, length(mine) - length(theirs)) ~ '^[A-Z]+$'
                            )
                            or (
                                length(theirs) > length(mine)
                                and right(theirs, length(mine)) = mine
                                and left(theirs, length(theirs) - length(mine)) ~ '^[A-Z]+$'
                            )
                        )
                    )
        )
    end
{%- endmacro %}

{#- Different model numbers of the same kind, and none of that kind shared: the same
    letters (C380 vs C7, M8B vs M10B; not where one is the other with a number
    written on, code_extends), or the same digits and length with other
    letters (PX2210KW vs PX2210KS; not two quantities, a number and a word: 100DISC
    and 100PACK count different things), or the same letters before other numbers
    of three digits or more, whatever letters follow (KX-TG4022N vs KX-TG6532B, C270H
    vs C210: a suffix names a colour or region; T300 vs T300X share their number
    and do not conflict); common or rare codes alike. `first` and `second`
    are relations with int_listings' conflict_codes (title and SKU), their
    conflict_code_kinds, and title_codes. Two numbers that are both only in SKU
    fields are not compared: shops number their articles each their own way; a
    number a title carries is the product's. -#}
{% macro codes_conflict(first, second) -%}
    {%- set first_codes = first ~ '.conflict_codes' -%}
    {%- set second_codes = second ~ '.conflict_codes' -%}
    {%- set in_a_title -%}
        (mine.code = any({{ first }}.title_codes) or theirs.code = any({{ second }}.title_codes))
    {%- endset -%}
    (
        {{ first }}.conflict_code_kinds && {{ second }}.conflict_code_kinds
        and exists (
            select
            from unnest({{ first_codes }}, {{ first }}.conflict_code_kinds) as mine (code, kind)
            inner join unnest({{ second_codes }}, {{ second }}.conflict_code_kinds) as theirs (
                code, kind
            )
                on
                    mine.kind = theirs.kind
                    and mine.code <> theirs.code
                    and not {{ code_extends('mine.code', 'theirs.code') }}
                    and not {{ code_extends('theirs.code', 'mine.code') }}
            where
                {{ in_a_title }}
                and mine.kind <> all(
                    array(
                        select shared.kind
                        from unnest({{ first_codes }}, {{ first }}.conflict_code_kinds)
                            as shared (code, kind)
                        where shared.code = any({{ second_codes }})
                    )
                )
        )
    )
    or exists (
        select
        from unnest({{ first_codes }}) as mine (code)
        inner join unnest({{ second_codes }}) as theirs (code)
            on
                length(mine.code) = length(theirs.code)
                and mine.code <> theirs.code
                and mine.code ~ '[0-9]{3}'
                and not (mine.code ~ '^[0-9]+[A-Z]{3,}$' and theirs.code ~ '^[0-9]+[A-Z]{3,}$')
                and regexp_replace(mine.code, '[A-Z]', '', 'g')
                = regexp_replace(theirs.code, '[A-Z]', '', 'g')
        where
            {{ in_a_title }}
            and mine.code <> all({{ second_codes }})
            and theirs.code <> all({{ first_codes }})
    )
    or exists (
        select
        from unnest({{ first_codes }}) as mine (code)
        inner join unnest({{ second_codes }}) as theirs (code)
            on
                mine.code ~ '^[A-Z]+[0-9]{3,}[A-Z]*$'
                and theirs.code ~ '^[A-Z]+[0-9]{3,}[A-Z]*$'
                and {{ code_stem('mine.code') }} <> {{ code_stem('theirs.code') }}
                and regexp_replace(mine.code, '[0-9]+[A-Z]*$', '')
                = regexp_replace(theirs.code, '[0-9]+[A-Z]*$', '')
                and regexp_replace(mine.code, '^[A-Z]+[0-9]+', '')
                <> regexp_replace(theirs.code, '^[A-Z]+[0-9]+', '')
        where
            {{ in_a_title }}
            and {{ code_stem('mine.code') }} <> all(
                array(select {{ code_stem('code') }} from unnest({{ second_codes }}) as code)
            )
            and {{ code_stem('theirs.code') }} <> all(
                array(select {{ code_stem('code') }} from unnest({{ first_codes }}) as code)
            )
    )
{%- endmacro %}

{#- One word followed by other numbers in the two titles (int_listings'
    numbered_words): "Powerfly 5" and "Powerfly 7", "Kathmandu Hybrid Pro 625" and
    "... Pro 750" are two trims of a model line. A title that carries the other's
    number after the word as well agrees; one that leaves the number out says
    nothing. -#}
{% macro numbers_conflict(first, second) -%}
    exists (
        select
        from unnest({{ first }}.numbered_words) as mine (numbered)
        inner join unnest({{ second }}.numbered_words) as theirs (numbered)
            on
                split_part(mine.numbered, ' ', 1) = split_part(theirs.numbered, ' ', 1)
                and mine.numbered <> theirs.numbered
        where
            mine.numbered <> all({{ second }}.numbered_words)
            and theirs.numbered <> all({{ first }}.numbered_words)
    )
{%- endmacro %}

{#- A code without the letters it ends in: the model number a colour or region
    suffix follows (KXTG4022 of KX-TG4022N). -#}
{% macro code_stem(code) -%}
    regexp_replace({{ code }}, '[A-Z]+$', '')
{%- endmacro %}

{#- `longer` is `shorter` with a number written on where a letter ends or starts
    it: the fuller form of one code (C6658AN and its C6658AN424, 16GB and 16GB20,
    MF8090AA004 and 51MF8090AA004), where C7 and C70 are two model names. -#}
{% macro code_extends(longer, shorter) -%}
    (
        (
            {{ shorter }} ~ '[A-Z]$'
            and left({{ longer }}, length({{ shorter }})) = {{ shorter }}
            and substr({{ longer }}, length({{ shorter }}) + 1) ~ '^[0-9]+$'
        )
        or (
            {{ shorter }} ~ '^[A-Z]'
            and right({{ longer }}, length({{ shorter }})) = {{ shorter }}
            and left({{ longer }}, length({{ longer }}) - length({{ shorter }})) ~ '^[0-9]+$'
        )
    )
{%- endmacro %}

{#- Both state values of an attribute (arrays of int_listing_attributes), and none
    of one's is compatible with one of the other's: equal, or one refining the other
    (bosch and bosch/active line). What one side omits is no conflict. -#}
{% macro values_conflict(first_values, second_values) -%}
    coalesce(
        cardinality({{ first_values }}) > 0
        and cardinality({{ second_values }}) > 0
        and not exists (
            select
            from unnest({{ first_values }}) as mine
            cross join unnest({{ second_values }}) as theirs
            where mine = theirs or mine like theirs || '/%' or theirs like mine || '/%'
        ),
        false
    )
{%- endmacro %}

{#- The product-defining attributes two listings disagree on, as a comma-separated
    list (battery_wh,frame_type), or null: different brands (of those the
    vocabulary knows), battery capacities, frame types, model years, motors or
    motor positions, other edition words (edition, editions_differ), a price gap
    where one title says less (price, omission_price_gap), or different model
    numbers of one kind or other numbers after one word (model_number,
    codes_conflict, numbers_conflict). `first` and `second` are relations with
    int_listings' columns. -#}
{% macro attribute_conflicts(first, second) -%}
    nullif(
        concat_ws(
            ','
            {%- for attribute in ['brands', 'battery_whs', 'frame_types', 'model_years',
                                  'motors', 'motor_positions'] %},
                case
                    when {{ values_conflict(first ~ '.' ~ attribute, second ~ '.' ~ attribute) }}
                        then {{ sql_literal(attribute[:-1]) }}
                end
            {%- endfor %},
            case
                when {{ editions_differ(first, second) }} then 'edition'
            end,
            case
                when {{ omission_price_gap(first, second) }} then 'price'
            end,
            case
                when
                    {{ codes_conflict(first, second) }}
                    or {{ numbers_conflict(first, second) }}
                    then 'model_number'
            end
        ),
        ''
    )
{%- endmacro %}

{#- The edition words of the two titles' model lines (Plus, Pro, Sport... as the
    vocabulary reads them) are not the same set: an edition is part of the model
    line's name, so a title without one names the base line (Endeavour 5.B is not
    Endeavour 5.B Pro, Altura E-go Plus not Altura E-go Sport). A word of either
    brand field is no edition ("Elite Screens" is a brand). And where both carry
    one part number (share_part_number), it names the edition too: a title that
    adds "Plus" to it describes rather than names. -#}
{% macro editions_differ(first, second) -%}
    cardinality({{ first }}.editions) + cardinality({{ second }}.editions) > 0
    and exists (
        select
        from (
            (
                select unnest({{ first }}.editions)
                except
                select unnest({{ second }}.editions)
            )
            union all
            (
                select unnest({{ second }}.editions)
                except
                select unnest({{ first }}.editions)
            )
        ) as differing (word)
        where
            strpos(coalesce({{ first }}.brand_as_written, ''), differing.word) = 0
            and strpos(coalesce({{ second }}.brand_as_written, ''), differing.word) = 0
    )
    and not {{ share_part_number(first, second) }}
{%- endmacro %}

{#- Both listings carry one rare code that reads as a manufacturer's part number:
    five characters or more, three digits or more (KX-TGA660B, K72343US), unlike a
    model line's name (Charger4, C380). -#}
{% macro share_part_number(first, second) -%}
    exists (
        select
        from unnest({{ first }}.rare_codes) as code
        where
            code = any({{ second }}.rare_codes)
            and length(code) >= 5
            and code ~ '[0-9][^0-9]*[0-9][^0-9]*[0-9]'
    )
{%- endmacro %}

{#- One title leaves out a battery, frame type, model year or motor the other
    states, and the prices are more than var('price_outlier_ratio') apart: the
    variant that differs in what the title leaves out is likelier than a price
    that far off. -#}
{% macro omission_price_gap(first, second) -%}
    coalesce(
        (
            {%- for attribute in ['battery_whs', 'frame_types', 'model_years', 'motors'] %}
                (cardinality({{ first }}.{{ attribute }}) > 0)
                <> (cardinality({{ second }}.{{ attribute }}) > 0)
                {{- ' or' if not loop.last }}
            {%- endfor %}
        )
        and abs(ln(nullif({{ price_ratio(first, second) }}, 0)))
        > ln({{ var('price_outlier_ratio') }}),
        false
    )
{%- endmacro %}

{#- How many of battery capacity, frame type, model year and motor both listings
    state compatibly (values_conflict's sense of compatible). -#}
{% macro attribute_agreements(first, second) -%}
    (
        {%- for attribute in ['battery_whs', 'frame_types', 'model_years', 'motors'] %}
            case
                when
                    cardinality({{ first }}.{{ attribute }}) > 0
                    and cardinality({{ second }}.{{ attribute }}) > 0
                    and not {{ values_conflict(first ~ '.' ~ attribute, second ~ '.' ~ attribute) }}
                    then 1
                else 0
            end
            {{- ' +' if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}

{#- Both listings' brand fields name a brand, and not the same one, where the
    vocabulary knows neither (brand_as_written: lower case, letters and digits). A
    brand the vocabulary knows is an attribute (attribute_conflicts): two known
    brands that differ keep two listings apart. -#}
{% macro brand_conflict(first, second) -%}
    coalesce(
        (cardinality({{ first }}.brands) = 0 or cardinality({{ second }}.brands) = 0)
        and {{ first }}.brand_as_written <> {{ second }}.brand_as_written,
        false
    )
{%- endmacro %}

{#- The first price over the second: compared as they are in one currency, in euros
    across currencies; null where a price or a rate is missing. -#}
{% macro price_ratio(first, second) -%}
    case
        when
            {{ first }}.currency = {{ second }}.currency
            or ({{ first }}.currency is null and {{ second }}.currency is null)
            then {{ first }}.price / nullif({{ second }}.price, 0)
        else {{ first }}.price_eur / nullif({{ second }}.price_eur, 0)
    end
{%- endmacro %}

{#- One price more than var('price_ratio_limit') times the other (price_ratio); not
    judged where a price or rate is missing. -#}
{% macro price_conflict(first, second) -%}
    coalesce(
        abs(ln(nullif({{ price_ratio(first, second) }}, 0))) > ln({{ var('price_ratio_limit') }}),
        false
    )
{%- endmacro %}

{#- Whether `member`, a listing already in a cluster, keeps `listing` out of it when
    `listing` would join through `candidate` (a row of int_candidate_matches): an
    analyst unlinked the two, or they conflict (attribute_conflicts), unless the
    candidate is a link or an equal GTIN, or the two share a valid GTIN or a link.
    bikematch_assign_clusters (sql/functions/04_cluster_assignment.sql) checks it
    against every member. -#}
{% macro joining_blocked(listing, member, candidate) -%}
    {{ decided_by_hand(listing, member, 'unlink') }}
    or (
        {{ candidate }}.evidence = 'embedding'
        and {{ attribute_conflicts(listing, member) }} is not null
        and not coalesce({{ listing }}.valid_gtin = {{ member }}.valid_gtin, false)
        and not {{ decided_by_hand(listing, member, 'link') }}
    )
{%- endmacro %}

{#- Whether an analyst stored `decision` (link or unlink) on the two listings. -#}
{% macro decided_by_hand(first, second, decision) -%}
    exists (
        select
        from {{ ref('stg_match_links') }} as decided
        where
            decided.bike_id = {{ first }}.bike_id
            and decided.other_id = {{ second }}.bike_id
            and decided.decision = {{ sql_literal(decision) }}
    )
{%- endmacro %}

{#- A pair's score: its similarity with the identifier evidence applied (a shared
    rare model number raises it; different brands the vocabulary does not know and
    a price gap beyond var('price_ratio_limit') lower it). -#}
{% macro pair_score(similarity, codes_agree, brand_conflict, price_conflict) -%}
    {%- set bonus = var('code_agree_bonus') if var('identifier_evidence') else 0 -%}
    {{ similarity }}
    + case when {{ codes_agree }} then {{ bonus }} else 0 end
    - case when {{ brand_conflict }} then {{ var('brand_conflict_penalty') }} else 0 end
    - case when {{ price_conflict }} then {{ var('price_conflict_penalty') }} else 0 end
{%- endmacro %}

{#- Whether `first` states a product attribute or an edition word that `second`
    leaves out (a year, a motor, "Plus"): a listing that says less may fit the
    products `first` tells apart. -#}
{% macro states_more(first, second) -%}
    (
        {%- for attribute in ['battery_whs', 'frame_types', 'model_years', 'motors',
                              'motor_positions', 'editions'] %}
            {% if not loop.first %}or {% endif -%}
            (cardinality({{ first }}.{{ attribute }}) > 0 and cardinality({{ second }}.{{ attribute }}) = 0)
        {%- endfor %}
    )
{%- endmacro %}

{#- Why `first` and `second`, members of two clusters, make the clusters two
    different products, or null: 'attributes' when they disagree on an attribute
    (attribute_conflicts; a listing that fits both leaves out what tells them
    apart), 'shop' where a shop lists each product once (var('max_listings_per_shop')
    1) and sells them as two listings. -#}
{% macro rival_products(first, second) -%}
    case
        when {{ attribute_conflicts(first, second) }} is not null then 'attributes'
        {% if var('max_listings_per_shop') == 1 and var('rivals_within_a_shop') -%}
            when {{ first }}.webshop = {{ second }}.webshop then 'shop'
        {% endif -%}
    end
{%- endmacro %}
