{#- Every value of `column_name` in rows matching `condition` is >= `minimum`. -#}
{% test at_least(model, column_name, minimum, condition="true") %}
    select *
    from {{ model }}
    where ({{ condition }}) and not ({{ column_name }} >= {{ minimum }})
{% endtest %}
