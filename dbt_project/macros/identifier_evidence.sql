{#-
    The identifier evidence of a pair of listings: named predicates over the
    columns int_candidate_matches works out once per listing. Each is a boolean SQL
    expression; the dbt unit tests in int_models.yml pin what each says.
-#}

{#- Two listings share a rare model number, or one extends the other's with letters
    (MC359LL vs MC359LLA), not by continuing its number (DSCTX10 vs DSCTX100V). Only
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
                            (
                                mine like theirs || '%'
                                and (
                                    theirs !~ '[0-9]$'
                                    or substr(mine, length(theirs) + 1, 1) !~ '[0-9]'
                                )
                            )
                            or (
                                theirs like mine || '%'
                                and (
                                    mine !~ '[0-9]$'
                                    or substr(theirs, length(mine) + 1, 1) !~ '[0-9]'
                                )
                            )
                        )
                    )
        )
    end
{%- endmacro %}

{#- Different model numbers of the same kind, and none of that kind shared: C380 vs
    C7, 400WH vs 625WH (common or rare codes alike). -#}
{% macro codes_conflict(first_codes, first_kinds, second_codes, second_kinds) -%}
    case
        when not {{ first_kinds }} && {{ second_kinds }} then false
        when
            {{ first_codes }} @> {{ second_codes }}
            and {{ second_codes }} @> {{ first_codes }}
            then false
        else exists (
            select
            from unnest({{ first_codes }}, {{ first_kinds }}) as mine (code, kind)
            inner join unnest({{ second_codes }}, {{ second_kinds }}) as theirs (code, kind)
                on mine.kind = theirs.kind and mine.code <> theirs.code
            where mine.kind <> all(
                array(
                    select shared.kind
                    from unnest({{ first_codes }}, {{ first_kinds }}) as shared (code, kind)
                    where shared.code = any({{ second_codes }})
                )
            )
        )
    end
{%- endmacro %}

{#- Both listings name a brand, and not the same one (brand keys: lower case, letters
    and digits only). -#}
{% macro brand_conflict(first_brand_key, second_brand_key) -%}
    coalesce({{ first_brand_key }} <> {{ second_brand_key }}, false)
{%- endmacro %}

{#- One price more than var('price_ratio_limit') times the other: compared as they are
    in one currency, in euros across currencies, not at all where a rate is missing. -#}
{% macro price_conflict(first, second) -%}
    coalesce(
        case
            when {{ first }}.currency is not distinct from {{ second }}.currency
                then
                    greatest({{ first }}.price, {{ second }}.price)
                    > {{ var('price_ratio_limit') }} * least({{ first }}.price, {{ second }}.price)
            else
                greatest({{ first }}.price_eur, {{ second }}.price_eur)
                > {{ var('price_ratio_limit') }}
                * least({{ first }}.price_eur, {{ second }}.price_eur)
        end,
        false
    )
{%- endmacro %}
