{#-
    True when `column` is a GTIN-8, -12 (UPC), -13 (EAN) or -14 with a valid
    check digit. Weights 3,1,3,... run from the digit left of the check digit,
    so left-padding every length to 14 digits lets one formula serve all.
-#}
{% macro is_valid_gtin(column) -%}
    coalesce(
        {{ column }} ~ '^([0-9]{8}|[0-9]{12,14})$'
        and {{ column }} !~ '^0+$'
        and (
            select
                (10 - sum(
                    substr(lpad({{ column }}, 14, '0'), position, 1)::int
                    * case when position % 2 = 1 then 3 else 1 end
                ) % 10) % 10
            from generate_series(1, 13) as position
        ) = right({{ column }}, 1)::int,
        false
    )
{%- endmacro %}
