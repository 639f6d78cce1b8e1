{#-
    The nearest-neighbour search of int_vector_neighbours, as a function the
    model calls once per listing: the k nearest listings of other shops by
    cosine distance of the concatenated embedding, `order by ... limit k` on
    the model's HNSW index (the cast to halfvec(dims) and the literal
    `model = ...` match the partial expression index that
    bikematch_register_model() created).

    Why a function and not a lateral subquery: Postgres never runs a lateral
    subquery with LIMIT in parallel workers, so the searches would use one
    core. A PL/pgSQL function is opaque to the planner; marked parallel safe
    and costly, and called in the select list, it runs in a parallel plan
    whose workers share the listings (up to max_parallel_workers_per_gather
    workers beside the leader). The session's hnsw.* settings reach the
    workers.
-#}
{% macro neighbour_search_function() -%}
    {{ adapter.quote(this.schema) }}.{{ adapter.quote(this.identifier ~ '__search') }}
{%- endmacro %}

{% macro create_neighbour_search() %}
    {% set dims = embedding_dims(var('embedding_model')) %}
    {% if dims is none %}
        {{ return("select 1") }}
    {% endif %}
    {% set k = var('candidate_k') | int %}
    create or replace function {{ neighbour_search_function() }}(
        query_embedding halfvec, query_bike_id uuid, query_webshop text
    ) returns table (neighbour_id uuid, neighbour_input_hash text, distance float8)
    language plpgsql stable parallel safe
    cost 100000 rows {{ k }}
    as $search$
    begin
        return query
        select
            candidate.bike_id,
            candidate.input_hash,
            (candidate.embedding::halfvec({{ dims }}) <=> query_embedding::halfvec({{ dims }}))::float8
        from {{ source('bikematch', 'vector_storage') }} as candidate
        inner join {{ source('bikematch', 'scraped_bikes') }} as candidate_listing
            on candidate.bike_id = candidate_listing.id
        where
            candidate.model = {{ sql_literal(var('embedding_model')) }}
            and candidate.bike_id <> query_bike_id
            -- Other shops only: a shop's own look-alikes would fill the k
            -- places; the iterative scan (pgvector 0.8+) keeps going until k
            -- are found.
            and candidate_listing.webshop <> query_webshop
        order by candidate.embedding::halfvec({{ dims }}) <=> query_embedding::halfvec({{ dims }})
        limit {{ k }};
    end;
    $search$
{% endmacro %}
