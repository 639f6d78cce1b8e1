-- The embedding models whose vectors are stored, with their dimensions.
create table if not exists embedding_models (
    name text primary key,
    image_dims integer not null check (image_dims > 0),
    text_dims integer not null check (text_dims > 0),
    registered_at timestamptz not null default now(),
    -- halfvec HNSW indexes stop at 4,000 dimensions.
    constraint embedding_models_dims_check check (image_dims + text_dims <= 4000)
);

-- One row per listing and model: its image and title vectors, and their
-- L2-normalised concatenation [image, text] as halfvec (HNSW on plain vector
-- stops at 2,000 dimensions; PE-Core's concatenation has 2,048).
create table if not exists vector_storage (
    bike_id uuid not null references scraped_bikes (id) on delete cascade,
    model text not null references embedding_models (name),
    image_embedding vector,
    text_embedding vector not null,
    embedding halfvec not null,
    text_only boolean not null default false,
    input_hash text not null,
    embedded_at timestamptz not null default now(),
    primary key (bike_id, model),
    constraint vector_storage_image_check check (text_only = (image_embedding is null))
);

-- Listings that could not be embedded, retried later up to a cap.
create table if not exists embedding_failures (
    bike_id uuid not null references scraped_bikes (id) on delete cascade,
    model text not null,
    stage text not null,
    error text not null,
    attempts integer not null default 1 check (attempts > 0),
    first_failed_at timestamptz not null default now(),
    last_attempt_at timestamptz not null default now(),
    primary key (bike_id, model)
);

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

drop trigger if exists vector_storage_dims on vector_storage;
create trigger vector_storage_dims
before insert or update on vector_storage
for each row execute function bikematch_check_vector_dims();

-- The HNSW index name for a model: readable, unique, within 63 characters.
create or replace function bikematch_hnsw_index_name(model_name text) returns text
language sql immutable as $$
    select 'vector_storage_hnsw_'
        || left(regexp_replace(lower(model_name), '[^a-z0-9]+', '_', 'g'), 30)
        || '_' || left(md5(model_name), 8)
$$;

-- Register a model and make sure its HNSW index exists. The column has no
-- fixed dimension (models differ), so the index is a partial expression index
-- per model on embedding::halfvec(dims); queries use the same expression and
-- `where model = ...` to use it.
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
        '((embedding::halfvec(%s)) halfvec_cosine_ops) where model = %L',
        index_name, model_image_dims + model_text_dims, model_name
    );
    return index_name;
end;
$$;
