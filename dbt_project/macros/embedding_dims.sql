{#-
    The dimension of a model's concatenated embedding, from embedding_models.
    Queries must cast to exactly halfvec(dims) to match the model's partial
    HNSW index (see sql/functions/01_embedding_models.sql). None when the model
    has no vectors yet, or while dbt only parses the project.
-#}
{% macro embedding_dims(model_name) %}
    {% if not execute %}
        {{ return(none) }}
    {% endif %}
    {% set query %}
        select image_dims + text_dims
        from {{ source('bikematch', 'embedding_models') }}
        where name = {{ sql_literal(model_name) }}
    {% endset %}
    {% set rows = run_query(query).rows %}
    {{ return(rows[0][0] if rows | length > 0 else none) }}
{% endmacro %}
