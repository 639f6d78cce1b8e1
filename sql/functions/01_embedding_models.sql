-- The embedding models whose vectors are stored, and each one's HNSW index.

-- Vectors must have their model's dimensions: a wrong-sized vector is a bug
-- upstream and would poison every similarity computed against it.
create or replace function bikematch_check_vector_dims() returns trigger
language plpgsql as $$
declare
    expected embedding_models%rowtype;
begin
    select * into strict expected from embedding_models where name = new.model;
    if vector_dims(new.text_embedding) <> expected.text_dims
        or (new.image_embedding is not null
            and vector_dims(new.image_embedding) <> expected.image_dims)
        or vector_dims(new.embedding) <> expected.image_dims + expected.text_dims then
        raise exception 'vector dimensions do not match model % (image %, text %)',
            new.model, expected.image_dims, expected.text_dims
            using errcode = 'data_exception';
    end if;
    return new;
end;
$$;

create or replace trigger vector_storage_dims
before insert or update on vector_storage
for each row execute function bikematch_check_vector_dims();

-- The HNSW index name for a model: readable, unique, within 63 characters.
create or replace function bikematch_hnsw_index_name(model_name text) returns text
language sql immutable as $$
    select 'vector_storage_hnsw_'
        || left(regexp_replace(lower(model_name), '[^a-z0-9]+', '_', 'g'), 30)
        || '_' || left(md5(model_name), 8)
$$;

-- A model's HNSW index. The column has no fixed dimension (models differ), so the
-- index is a partial expression index per model on embedding::halfvec(dims);
-- queries use the same expression and `where model = ...` to use it.
--
-- The graph is built with a wider candidate list than pgvector's default
-- (ef_construction 200 instead of 64): it finds near-duplicates at the low
-- ef_search the nightly clustering uses (recall of the matches >= 0.99 at
-- ef_search 40 on the 100,000-listing benchmark, against 0.89 with the default
-- graph; see docs/benchmarks.md).
--
-- Both places that make the index use this definition: registering a model, and
-- the embedder's build after a large load (embedder/index.py), which writes the
-- vectors without the index first: one build on parallel maintenance workers
-- costs far less than maintaining the graph on every insert.
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
