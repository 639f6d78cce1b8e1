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

-- The assignment (sql/0010) with two changes. A listing prefers, after a link by
-- hand and an equal GTIN, the candidate that fits it best (`fit`: the score, less
-- a price gap; see int_candidate_matches), anchor shop or not. And it joins a
-- cluster only if no member already placed there blocks it. `blocks` is a boolean SQL expression
-- over `listing` and `member` (rows of the listings table) and `candidate` (the
-- candidate pair through which the listing would join), which dbt's master_bikes
-- writes from the project's conflict rules: a listing that contradicts any member
-- of a cluster (another battery, frame type, model year, motor or model number),
-- or was unlinked from one, stays out, even when its best neighbour there agrees.
drop function if exists bikematch_assign_clusters(regclass, regclass, integer, integer);

create or replace function bikematch_assign_clusters(
    listings regclass,
    candidates regclass,
    max_per_shop integer,
    rounds integer,
    blocks text
)
returns table (
    bike_id uuid,
    cluster_id uuid,
    matched_via text,
    matched_bike_id uuid,
    similarity double precision,
    score double precision
)
language plpgsql volatile as $$
#variable_conflict use_column
declare
    shop integer;
begin
    -- Scratch tables live for this transaction (and a transaction pooler's
    -- server connection) alone.
    drop table if exists pg_temp.assign_placed, pg_temp.assign_options, pg_temp.assign_won;
    create temp table assign_placed (
        bike_id uuid primary key,
        cluster_id uuid not null,
        matched_via text not null,
        matched_bike_id uuid,
        similarity double precision,
        score double precision
    ) on commit drop;
    create index on assign_placed (cluster_id);

    -- 1. The anchor shop's listings seed the clusters.
    execute format(
        'insert into assign_placed
         select bike_id, bikematch_cluster_id(webshop, url), ''anchor'', null, null, null
         from %s where shop_rank = 0',
        listings
    );

    for shop in execute format(
        'select distinct shop_rank from %s where shop_rank > 0 order by shop_rank', listings
    ) loop
        -- 2. The clusters this shop's listings could join, best first: those of
        --    their candidates placed so far that no member blocks.
        execute format(
            'create temp table assign_options on commit drop as
             select
                 candidate.bike_id,
                 placed.cluster_id,
                 candidate.neighbour_id as matched_bike_id,
                 candidate.similarity,
                 candidate.score,
                 candidate.fit,
                 candidate.evidence,
                 candidate.matched_via,
                 candidate.url,
                 row_number() over (
                     partition by candidate.bike_id
                     order by
                         candidate.evidence = ''link'' desc,
                         candidate.evidence = ''gtin'' desc,
                         candidate.fit desc,
                         candidate.neighbour_webshop asc,
                         candidate.neighbour_url asc
                 ) as preference
             from %1$s as candidate
             inner join assign_placed as placed on candidate.neighbour_id = placed.bike_id
             inner join %2$s as listing on candidate.bike_id = listing.bike_id
             where
                 candidate.shop_rank = %3$s
                 and not exists (
                     select
                     from assign_placed as fellow
                     inner join %2$s as member on fellow.bike_id = member.bike_id
                     where fellow.cluster_id = placed.cluster_id and (%4$s)
                 )',
            candidates, listings, shop, blocks
        );
        create temp table assign_won (
            bike_id uuid primary key,
            cluster_id uuid not null,
            matched_bike_id uuid,
            similarity double precision,
            score double precision,
            matched_via text
        ) on commit drop;

        -- 3. Rounds of claims.
        for claim_round in 1..rounds loop
            insert into assign_won
            select
                ranked.bike_id,
                ranked.cluster_id,
                ranked.matched_bike_id,
                ranked.similarity,
                ranked.score,
                ranked.matched_via
            from (
                select
                    claim.*,
                    claim.taken + row_number() over (
                        partition by claim.cluster_id
                        order by
                            claim.evidence = 'link' desc,
                            claim.evidence = 'gtin' desc,
                            claim.fit desc,
                            claim.url asc
                    ) as place
                from (
                    -- each listing not placed yet: its best cluster with room left
                    select distinct on (choice.bike_id)
                        choice.*,
                        coalesce(filled.taken, 0) as taken
                    from assign_options as choice
                    left join (
                        select won.cluster_id, count(*) as taken
                        from assign_won as won group by won.cluster_id
                    ) as filled on choice.cluster_id = filled.cluster_id
                    where
                        not exists (
                            select from assign_won as won where won.bike_id = choice.bike_id
                        )
                        and coalesce(filled.taken, 0) < max_per_shop
                    order by choice.bike_id asc, choice.preference asc
                ) as claim
            ) as ranked
            where ranked.place <= max_per_shop;
        end loop;

        -- 4. Placed: the winners in their clusters, the others as seeds.
        execute format(
            'insert into assign_placed
             select
                 listing.bike_id,
                 coalesce(won.cluster_id, bikematch_cluster_id(listing.webshop, listing.url)),
                 coalesce(won.matched_via, ''seed''),
                 won.matched_bike_id,
                 won.similarity,
                 won.score
             from %s as listing
             left join assign_won as won on listing.bike_id = won.bike_id
             where listing.shop_rank = %s',
            listings, shop
        );
        drop table assign_options, assign_won;
    end loop;

    return query
        select
            placed.bike_id,
            placed.cluster_id,
            placed.matched_via,
            placed.matched_bike_id,
            placed.similarity,
            placed.score
        from assign_placed as placed;
end
$$;
