-- HNSW indexes built with a wider candidate list (ef_construction 200 instead
-- of pgvector's default 64): the graph finds near-duplicates at the low
-- ef_search the nightly clustering uses (recall of the matches >= 0.99 at
-- ef_search 40 on the 100,000-listing benchmark, against 0.89 with the
-- default graph; see docs/benchmarks.md). Inserts cost more, a small price
-- next to computing the embedding. Indexes made before this migration are
-- rebuilt with the new parameters.
create or replace function bikematch_register_model(
    model_name text, model_image_dims integer, model_text_dims integer
) returns text
language plpgsql as $$
declare
    known embedding_models%rowtype;
    index_name text := bikematch_hnsw_index_name(model_name);
begin
    select * into known from embedding_models where name = model_name;
    if found and (known.image_dims, known.text_dims) <> (model_image_dims, model_text_dims) then
        raise exception 'model % is registered with dimensions (%, %), not (%, %)',
            model_name, known.image_dims, known.text_dims, model_image_dims, model_text_dims
            using errcode = 'data_exception';
    end if;
    insert into embedding_models (name, image_dims, text_dims)
    values (model_name, model_image_dims, model_text_dims)
    on conflict (name) do nothing;
    execute format(
        'create index if not exists %I on vector_storage using hnsw '
        '((embedding::halfvec(%s)) halfvec_cosine_ops) with (m = 16, ef_construction = 200) '
        'where model = %L',
        index_name, model_image_dims + model_text_dims, model_name
    );
    return index_name;
end;
$$;

do $$
declare
    model embedding_models%rowtype;
begin
    for model in select * from embedding_models order by name loop
        execute format('drop index if exists %I', bikematch_hnsw_index_name(model.name));
        perform bikematch_register_model(model.name, model.image_dims, model.text_dims);
    end loop;
end;
$$;
