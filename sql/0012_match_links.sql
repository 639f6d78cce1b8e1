-- Corrections an analyst makes (`bikematch link` / `bikematch unlink`): two listings
-- that are the same product (link) or are not (unlink), whatever the similarity
-- and the evidence say. Every later build honours them (int_match_links). The pair
-- is stored once, the smaller id first; a listing's removal removes its links.
create table if not exists match_links (
    first_id uuid not null references scraped_bikes (id) on delete cascade,
    second_id uuid not null references scraped_bikes (id) on delete cascade,
    decision text not null,
    note text,
    created_at timestamptz not null default now(),
    primary key (first_id, second_id),
    constraint match_links_order_check check (first_id < second_id),
    constraint match_links_decision_check check (decision in ('link', 'unlink'))
);

-- The assignment honours them and checks every member of a cluster a listing
-- would join (a `blocks` argument): the old signature goes.
drop function if exists bikematch_assign_clusters(regclass, regclass, integer, integer);

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes 79c9cb1e1601d62ba4862611329d27f047dd7cece2082b292db3fe08ac3323cf
