{#-
    `set local hnsw.iterative_scan = relaxed_order` where pgvector has it (0.8+): with
    a filter on the nearest-neighbour search, the HNSW scan then continues until
    the LIMIT is met instead of stopping at ef_search candidates. A harmless
    `select 1` on older pgvector.
-#}
{% macro iterative_scan_setting() %}
    {% if execute %}
        {% set version = run_query(
            "select extversion from pg_extension where extname = 'vector'"
        ).columns[0].values() %}
        {% if version and version[0].split('.') | map('int') | list >= [0, 8] %}
            {{ return("set local hnsw.iterative_scan = relaxed_order") }}
        {% endif %}
    {% endif %}
    {{ return("select 1") }}
{% endmacro %}
