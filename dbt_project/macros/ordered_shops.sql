{#-
    The shops that have listings, in clustering order: the anchor shop first,
    then var('shop_priority') in its order, then the rest by name. Clusters are
    built one shop at a time in this order, so it must not depend on row order.
-#}
{% macro ordered_shops() %}
    {% if not execute %}
        {{ return([var('anchor_shop')]) }}
    {% endif %}
    {% set query %}
        select distinct webshop from {{ source('bikematch', 'scraped_bikes') }} order by webshop
    {% endset %}
    {% set present = run_query(query).columns[0].values() | list %}
    {% set ordered = [var('anchor_shop')] %}
    {% for shop in var('shop_priority') if shop in present and shop not in ordered %}
        {% do ordered.append(shop) %}
    {% endfor %}
    {% for shop in present if shop not in ordered %}
        {% do ordered.append(shop) %}
    {% endfor %}
    {{ return(ordered) }}
{% endmacro %}
