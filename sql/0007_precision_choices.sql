-- The inference precision `bikematch embed --dtype auto` measured for a model
-- on a kind of machine (its CPU, torch's kernels for it, torch's version,
-- threads): whether bf16 autocast agreed with float32 and ran faster. Later
-- runs on the same kind of machine use the stored choice instead of
-- embedding their first batch twice, until it is older than the job's limit
-- (30 days by default; `--remeasure-precision` measures again at once).
create table if not exists precision_choices (
    model text not null references embedding_models (name) on delete cascade,
    machine text not null,
    candidate text not null,
    chosen text not null,
    -- Lowest cosine between a listing's candidate and float32 vectors.
    agreement double precision not null,
    -- float32 seconds / candidate seconds for the same listings.
    speedup double precision not null,
    listings integer not null check (listings > 0),
    -- Why the candidate could not run at all on this machine, if it could not.
    error text,
    measured_at timestamptz not null default now(),
    primary key (model, machine, candidate)
);
