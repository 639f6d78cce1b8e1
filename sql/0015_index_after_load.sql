-- A large load (a first run, a re-embed of everything) writes a model's vectors
-- without its HNSW index and builds the index afterwards (embedder/index.py): one
-- build, on parallel maintenance workers, costs far less than maintaining the graph
-- on every insert. The index's definition lives here once, for both places that
-- make it: registering a model, and the embedder's build after a load.
create or replace function bikematch_hnsw_index_ddl(model_name text) returns text
language sql stable as $$
    select format(
        'create index if not exists %I on vector_storage using hnsw '
        '((embedding::halfvec(%s)) halfvec_cosine_ops) with (m = 16, ef_construction = 200) '
        'where model = %L',
        bikematch_hnsw_index_name(name), image_dims + text_dims, name
    )
    from embedding_models
    where name = model_name
$$;

-- 'valid', 'invalid' (left by a concurrent build that was interrupted, CREATE INDEX
-- CONCURRENTLY by hand, say: kept up to date but never used) or 'missing'.
create or replace function bikematch_hnsw_index_state(model_name text) returns text
language sql stable as $$
    select coalesce(
        (
            select case when i.indisvalid then 'valid' else 'invalid' end
            from pg_index as i
            where i.indexrelid = to_regclass(bikematch_hnsw_index_name(model_name))
        ),
        'missing'
    )
$$;

-- A model's row: its dimensions checked against what it was registered with.
create or replace function bikematch_add_model(
    model_name text, model_image_dims integer, model_text_dims integer
) returns void
language plpgsql as $$
declare
    known embedding_models%rowtype;
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
end;
$$;

-- Register a model and make sure its index exists and is valid: a run killed while
-- it loaded without the index, or while it built it, leaves it to the next run. (A
-- job about to load without the index calls bikematch_add_model alone.)
create or replace function bikematch_register_model(
    model_name text, model_image_dims integer, model_text_dims integer
) returns text
language plpgsql as $$
declare
    index_name text := bikematch_hnsw_index_name(model_name);
begin
    perform bikematch_add_model(model_name, model_image_dims, model_text_dims);
    if bikematch_hnsw_index_state(model_name) = 'invalid' then
        execute format('drop index %I', index_name);
    end if;
    execute bikematch_hnsw_index_ddl(model_name);
    return index_name;
end;
$$;
