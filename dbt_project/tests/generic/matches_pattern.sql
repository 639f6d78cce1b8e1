{#- Every value of `column_name` matches the regular expression `pattern`. -#}
{% test matches_pattern(model, column_name, pattern) %}
    select *
    from {{ model }}
    where {{ column_name }} !~ '{{ pattern }}'
{% endtest %}
