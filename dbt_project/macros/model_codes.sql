{#-
    The model-number-like tokens of a listing's title and SKU, normalised:
    upper case, without - / . separators, at least three characters, mixing
    letters and digits ("KDL-40V4100" -> KDL40V4100; "C7+" is C7, its + the
    edition Plus, which the vocabulary reads), or all digits from
    five up (article numbers such as 96438). Shorter numbers (sizes, years) say
    too little alone. In the SKU, digit groups split by spaces are one number
    ("020 45821 07" and "020-45821-07" are both 0204582107); a number after a
    letter loses its leading zeros (code_form). What ebike_vocabulary
    reads as the battery, the model year or the frame is no model number: a
    capacity ("625Wh"), a frame size ("53cm", "D53": a dames frame of 53 cm) or
    a model year ("MY24"). With short_codes, also a letter and a digit either way
    (the model line of "Grenoble C7", "Image 3.B"): too common to agree on, but
    C7 and C8 are two models.
-#}
{% macro model_codes(name, sku, short_codes=false) -%}
    array(
        select distinct token.code
        from regexp_matches(
            upper(
                coalesce({{ name }}, '')
                || ' '
                || coalesce(regexp_replace({{ sku }}, '([0-9])\s+(?=[0-9])', '\1', 'g'), '')
            ),
            '[A-Z0-9][A-Z0-9./+-]*[A-Z0-9+]',
            'g'
        ) as written (token)
        cross join lateral (
            select {{ code_form('written.token[1]') }} as code
        ) as token
        where
            (token.code ~ '[A-Z]' and token.code ~ '[0-9]' and length(token.code) >= 3)
            {%- if short_codes %}
                or token.code ~ '^([A-Z][0-9]|[0-9][A-Z])$'
            {%- endif %}
            or token.code ~ '^[0-9]{5,}$'
        except
        select {{ code_form('token[1]') }}
        from regexp_matches(
            upper(coalesce({{ name }}, '')),
            '\m([0-9]+K?WH|[0-9]{2,3}CM|[DH][4-6][0-9]|MY[0-9]{2})\M',
            'g'
        ) as token
    )
{%- endmacro %}

{#- The letters of a code: codes with the same letters are the same kind of thing
    (400WH and 625WH are both capacities; C380 and C7 both model names). -#}
{% macro code_kind(code) -%}
    regexp_replace({{ code }}, '[^A-Z]', '', 'g')
{%- endmacro %}

{#- A written code as model_codes compares it: without - / . + separators, and
    without the zeros a number after a letter starts with (D05 is D5, RVD0110 is
    RVD110: shops pad model numbers to a width, or do not). -#}
{% macro code_form(written) -%}
    regexp_replace(regexp_replace({{ written }}, '[-/.+]', '', 'g'), '([A-Z])0+([0-9])', '\1\2', 'g')
{%- endmacro %}

{#-
    The bare numbers of a title, each with the word before it ("powerfly 5",
    "vado 4", "pro 625", "e 1" of "Explore E+ 1"): the trim of a model line, where
    makers number their variants (Powerfly 5 and Powerfly 7, Turbo Vado 4.0 and
    5.0, E-Spark 720 and 730, Kathmandu Hybrid Pro 625 and 750). A number is one
    digit, one digit with one decimal (4.0 is 4) or three digits; two digits are
    left out, as frame and wheel sizes, speeds and torques are written so, and so
    is a number a unit follows ("0,5 kWh", "120 km", "9 kg") or a currency
    precedes: the vocabulary reads a battery, and shops state the rest each
    their own way.
-#}
{% macro numbered_words(name) -%}
    array(
        select distinct
            numbered.word || ' ' || trim_scale(replace(numbered.token, ',', '.')::numeric)::text
        from (
            select
                tokens.token[1] as token,
                lag(tokens.token[1]) over (order by tokens.position) as word,
                lead(tokens.token[1]) over (order by tokens.position) as next_token
            from regexp_matches(
                lower(coalesce({{ name }}, '')), '[[:alnum:]]+(?:[.,][[:alnum:]]+)*', 'g'
            ) with ordinality as tokens (token, position)
        ) as numbered
        where
            numbered.token ~ '^([0-9]([.,][0-9])?|[1-9][0-9]{2})$'
            and numbered.word ~ '[[:alpha:]]'
            and numbered.word not in ('x', 'eur', 'euro', 'usd', 'gbp', 'chf')
            and coalesce(numbered.next_token, '') not in (
                'x', 'wh', 'kwh', 'w', 'kw', 'watt', 'watts', 'v', 'ah', 'mah', 'nm', 'km', 'kg',
                'g', 'lb', 'lbs', 'mm', 'cm', 'm', 'inch', 'zoll', 'ft', 'feet', 'foot', 'pin',
                'pins', 'h', 'kmh', 'mph', 'mi', 'miles', 'min', 'eur', 'euro', 'jaar', 'year',
                'years', 'jahre'
            )
    )
{%- endmacro %}
