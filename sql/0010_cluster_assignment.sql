-- Which cluster (product) each listing joins, as a loop a reader can follow.
-- dbt's master_bikes model calls it with its two inputs: the listings taking part
-- (int_listings: bike_id, webshop, url, valid_gtin, shop_rank) and the candidate
-- pairs (int_candidate_matches: bike_id, neighbour_id, score, evidence, ...).
--
-- Shops are placed one at a time, in shop_rank order (0 is the anchor shop).
-- 1. Every listing of the anchor shop seeds a cluster of its own.
-- 2. For each later shop, each of its listings lists the clusters it could join:
--    those of its candidates placed so far, unless the cluster holds a different
--    valid GTIN; best first: an equal valid GTIN, then an anchor listing, then
--    the highest score, then the neighbour's (webshop, url), so that ties never
--    depend on row order.
-- 3. In up to `rounds` rounds, each listing not placed yet claims its best
--    cluster that still has room; a cluster takes at most `max_per_shop`
--    listings of one shop, keeping its best claims (GTIN first, then score, then
--    url); a listing that lost tries its next choice in the next round.
-- 4. A listing of that shop left without a cluster seeds its own, so bikes the
--    anchor shop does not sell still merge across the other shops.
--
-- A cluster's id is derived from its seed listing's (webshop, url): the same seed
-- gives the same id on every run and in every database.
create or replace function bikematch_cluster_id(webshop text, url text)
returns uuid
language sql immutable parallel safe as $$
    select md5('bikematch-cluster' || chr(31) || webshop || chr(31) || url)::uuid
$$;

create or replace function bikematch_assign_clusters(
    listings regclass,
    candidates regclass,
    max_per_shop integer,
    rounds integer
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
        score double precision,
        valid_gtin text
    ) on commit drop;

    -- 1. The anchor shop's listings seed the clusters.
    execute format(
        'insert into assign_placed
         select bike_id, bikematch_cluster_id(webshop, url), ''anchor'', null, null, null,
                valid_gtin
         from %s where shop_rank = 0',
        listings
    );

    for shop in execute format(
        'select distinct shop_rank from %s where shop_rank > 0 order by shop_rank', listings
    ) loop
        -- 2. The clusters this shop's listings could join, best first.
        execute format(
            'create temp table assign_options on commit drop as
             with cluster_gtins as (
                 select cluster_id, max(valid_gtin) as cluster_gtin
                 from assign_placed group by cluster_id
             )
             select
                 candidate.bike_id,
                 placed.cluster_id,
                 candidate.neighbour_id as matched_bike_id,
                 candidate.similarity,
                 candidate.score,
                 candidate.evidence,
                 candidate.matched_via,
                 candidate.url,
                 row_number() over (
                     partition by candidate.bike_id
                     order by
                         candidate.evidence = ''gtin'' desc,
                         candidate.neighbour_is_anchor desc,
                         candidate.score desc,
                         candidate.neighbour_webshop asc,
                         candidate.neighbour_url asc
                 ) as preference
             from %s as candidate
             inner join assign_placed as placed on candidate.neighbour_id = placed.bike_id
             inner join cluster_gtins on placed.cluster_id = cluster_gtins.cluster_id
             where
                 candidate.shop_rank = %s
                 and (
                     candidate.valid_gtin is null
                     or cluster_gtins.cluster_gtin is null
                     or candidate.valid_gtin = cluster_gtins.cluster_gtin
                 )',
            candidates, shop
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
                        order by claim.evidence = 'gtin' desc, claim.score desc, claim.url asc
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
                 won.score,
                 listing.valid_gtin
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
