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

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes ec9e19025ce114cf9e533622ac8bf3fc22400ffbeef63dac086717f70a8d0c83
