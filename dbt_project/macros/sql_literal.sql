{#- A Postgres string literal for a value that came from configuration or data. -#}
{% macro sql_literal(value) -%}
    '{{ value | string | replace("'", "''") }}'
{%- endmacro %}
