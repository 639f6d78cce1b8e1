-- One row per shop per crawl: when it ran, what it stored, and whether it saw the
-- whole shop (no limit stopped it early; `stopped_early` says which did). `db status`
-- gives each shop's last complete crawl from it.
create table if not exists crawls (
    id bigint generated always as identity primary key,
    webshop text not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    pages integer not null,
    stored integer not null,
    complete boolean not null,
    stopped_early text[] not null default '{}'
);

create index if not exists crawls_webshop_finished on crawls (webshop, finished_at desc);
