{#- At most `maximum` rows per group of `group_by` columns. -#}
{% test at_most_per_group(model, group_by, maximum) %}
    select {{ group_by | join(', ') }}, count(*) as rows_in_group
    from {{ model }}
    group by {{ group_by | join(', ') }}
    having count(*) > {{ maximum }}
{% endtest %}
