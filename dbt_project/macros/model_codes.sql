{#-
    The model-number-like tokens of a listing's title and SKU, normalised:
    upper case, without - / . separators, at least three characters, mixing
    letters and digits ("KDL-40V4100" -> KDL40V4100, "625Wh" -> 625WH, "C7+")
    or all digits from five up (article numbers such as 96438). Shorter
    numbers (sizes, years) say too little alone.
-#}
{% macro model_codes(name, sku) -%}
    array(
        select distinct regexp_replace(token[1], '[-/.]', '', 'g')
        from regexp_matches(
            upper(coalesce({{ name }}, '') || ' ' || coalesce({{ sku }}, '')),
            '[A-Z0-9][A-Z0-9./+-]*[A-Z0-9+]',
            'g'
        ) as token
        where
            (
                token[1] ~ '[A-Z]'
                and token[1] ~ '[0-9]'
                and length(regexp_replace(token[1], '[-/.]', '', 'g')) >= 3
            )
            or token[1] ~ '^[0-9]{5,}$'
    )
{%- endmacro %}

{#- The letters of a code: codes with the same letters are the same kind of thing
    (400WH and 625WH are both capacities; C380 and C7 both model names). -#}
{% macro code_kind(code) -%}
    regexp_replace({{ code }}, '[^A-Z]', '', 'g')
{%- endmacro %}
