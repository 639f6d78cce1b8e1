-- Which cluster (product) each listing joins, as a loop a reader can follow.
-- dbt's master_bikes model calls it with its inputs: the listings taking part
-- (int_listings: bike_id, webshop, url, valid_gtin, shop_rank, attributes) and the
-- candidate pairs (int_candidate_matches: bike_id, neighbour_id, score, fit,
-- evidence, ...), and the project's conflict rules as two SQL expressions.
--
-- Shops are placed one at a time, in shop_rank order (0 is the anchor shop).
-- 1. Every listing of the anchor shop seeds a cluster of its own.
-- 2. For each later shop, each of its listings lists the clusters it could join:
--    those of its candidates placed so far, best first: a link by hand, then an
--    equal GTIN, then the candidate that fits it best (`fit`: the score less a
--    price gap; see int_candidate_matches), then the neighbour's (webshop, url),
--    so that ties never depend on row order. A cluster is no option when any
--    member already placed there blocks the listing (`blocks`): a listing that
--    contradicts any member (another battery, frame type, model year, motor or
--    model number), or was unlinked from one, stays out, even when its best
--    neighbour there agrees.
-- 2b. Rival products: a listing that fits the clusters of two different products
--    about equally well (their members disagree on something, `rivals`, so the
--    listing leaves out what tells them apart: the motor of two variants, say;
--    `decide` below says what "about equally" means) cannot be placed by its
--    similarity, which then mostly measures wording. It keeps the one nearest in
--    price when the next one's price is at least `price_margin` times further
--    from its own; otherwise it is ambiguous: it stays in a cluster of its own
--    (matched_via 'ambiguous') that later listings join only through a link by
--    hand or an equal GTIN. A rival can be a cluster the listing reaches only by
--    a pair a little below the threshold (the candidates' `passes` false), whose
--    photos are as like the listing's as a member's of its best cluster: such a
--    pair never places a listing, so where the rival is the nearer in price the
--    listing is ambiguous too.
-- 3. In up to `rounds` rounds, each listing not placed yet claims its best
--    cluster that still has room; a cluster takes at most `max_per_shop`
--    listings of one shop, keeping its best claims (link, GTIN, then fit, then
--    url); a listing that lost tries its next choice in the next round.
-- 4. A listing of that shop left without a cluster seeds its own, so bikes the
--    anchor shop does not sell still merge across the other shops.
-- 5. A second look once every shop is placed: each listing placed by its
--    similarity (and each listing that seeded a cluster) takes 2b's decision again
--    among every cluster, those seeded after it included, and moves where it
--    decides.
--
-- `blocks` is a boolean SQL expression over `listing` and `member` (rows of the
-- listings table) and `candidate` (the candidate pair through which the listing
-- would join). `rivals` is a text one over `first_member` and `second_member`
-- (rows of the listings table): why members of two clusters make them different
-- products, 'attributes' (they disagree on one) or 'shop' (one shop's two
-- listings), or null.
-- dbt's master_bikes writes both from the project's rules.
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
    rounds integer,
    blocks text,
    rivals text,
    score_window double precision,
    price_margin double precision
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
    -- Rival products: of a listing's options (assign_options), its best cluster
    -- (preference 1, not by a link or GTIN) and the clusters that are rivals of it:
    -- other products (`rivals`) that fit the listing about as well. A rival
    -- whose members disagree with the best's on an attribute the listing leaves out
    -- ('attributes': two variants of a model line) counts when its photos look as
    -- much like the listing's (the clusters' best image similarity within
    -- `score_window` / 2; the score where a side has no photo), since the titles'
    -- similarity then mostly measures wording, even through a pair a little below
    -- the threshold (`passes` false); a rival by a shop's two listings ('shop')
    -- when its best score, at the threshold, lies within `score_window` of the
    -- best cluster's. With no rival the listing takes its best cluster; otherwise
    -- the one nearest in price when the next one's price is at least `price_margin`
    -- times further from its own, or none (cluster_id null: ambiguous). A cluster's
    -- price is the median of its members' the listing is compared with (like for
    -- like, price_ratio): the nearest member alone would follow one shop's
    -- discount, and favour the cluster with the most members.
    decide text;
    -- What a listing's options (assign_options) hold of each candidate pair
    -- (`candidate`) through which it could join a placed listing's (`placed`)
    -- cluster, and its preference among them: a link by hand, then an equal GTIN,
    -- then the best fit, then the neighbour's (webshop, url).
    option_columns constant text := $columns$
        candidate.bike_id,
        placed.cluster_id,
        candidate.neighbour_id as matched_bike_id,
        candidate.similarity,
        candidate.image_similarity,
        candidate.score,
        candidate.fit,
        candidate.evidence,
        candidate.matched_via,
        candidate.url,
        candidate.passes,
        ln(nullif(candidate.price_ratio, 0)) as log_price_ratio,
        row_number() over (
            partition by candidate.bike_id
            order by
                candidate.passes desc,
                candidate.evidence = 'link' desc,
                candidate.evidence = 'gtin' desc,
                candidate.fit desc,
                candidate.neighbour_webshop asc,
                candidate.neighbour_url asc
        ) as preference$columns$;
    -- Whether clusters A and B are two products: a member of each (the listing
    -- being placed left out) are, by `rivals` (its verdict: rivalry.why) and a
    -- condition on it. format() arguments: the listings table, `rivals`, A, B, the
    -- listing, the condition.
    clusters_rival constant text := $fragment$exists (
            select
            from assign_placed as one
            inner join %1$s as first_member on one.bike_id = first_member.bike_id
            cross join assign_placed as other
            inner join %1$s as second_member on other.bike_id = second_member.bike_id
            cross join lateral (select (%2$s) as why) as rivalry
            where
                one.cluster_id = %3$s
                and other.cluster_id = %4$s
                and one.bike_id <> %5$s
                and other.bike_id <> %5$s
                and (%6$s)
        )$fragment$;
begin
    decide := format(
        $query$
        with clusters as (
            select
                option.bike_id,
                option.cluster_id,
                max(option.score) as score,
                max(option.image_similarity) as image_similarity,
                bool_or(option.passes) as passes,
                min(option.score) as lowest_score,
                min(option.image_similarity) as lowest_image_similarity,
                abs(
                    percentile_cont(0.5) within group (order by option.log_price_ratio)
                ) as distance
            from assign_options as option
            group by option.bike_id, option.cluster_id
        ),
        best as (
            select
                option.bike_id,
                fitting.cluster_id,
                fitting.score,
                fitting.image_similarity,
                fitting.lowest_score,
                fitting.lowest_image_similarity
            from assign_options as option
            inner join clusters as fitting
                on option.bike_id = fitting.bike_id and option.cluster_id = fitting.cluster_id
            where option.preference = 1 and option.evidence = 'embedding' and option.passes
        ),
        contenders as (
            select
                fitting.bike_id,
                fitting.cluster_id,
                fitting.distance,
                fitting.passes,
                best.cluster_id as best_cluster_id
            from clusters as fitting
            inner join best on fitting.bike_id = best.bike_id
            where
                fitting.cluster_id = best.cluster_id
                -- a cluster reached only below the threshold is a rival by an
                -- attribute alone, and only where its photos look as much like the
                -- listing's as a member's of the best cluster does (by the score
                -- where a side has no photo): no less alike than its own cluster
                or (
                    (
                        fitting.passes
                        or coalesce(
                            fitting.image_similarity >= best.lowest_image_similarity,
                            fitting.score >= best.lowest_score
                        )
                    )
                    and %1$s
                )
        ),
        ranked as (
            select
                contenders.*,
                count(*) over (partition by contenders.bike_id) as rival_count,
                row_number() over (
                    partition by contenders.bike_id
                    order by contenders.distance asc nulls last, contenders.cluster_id
                ) as nearness,
                lead(contenders.distance) over (
                    partition by contenders.bike_id
                    order by contenders.distance asc nulls last, contenders.cluster_id
                ) as next_distance
            from contenders
        )
        select
            ranked.bike_id,
            ranked.best_cluster_id,
            case
                when ranked.rival_count = 1 then ranked.cluster_id
                when ranked.next_distance - ranked.distance >= ln(%2$s) and ranked.passes
                    then ranked.cluster_id
            end as cluster_id,
            ranked.rival_count
        from ranked
        where ranked.nearness = 1
        $query$,
        format(
            clusters_rival,
            listings,
            rivals,
            'best.cluster_id',
            'fitting.cluster_id',
            'fitting.bike_id',
            format(
                $condition$case rivalry.why
                    when 'attributes' then coalesce(
                        fitting.image_similarity >= best.image_similarity - %1$s / 2,
                        fitting.score >= best.score - %1$s
                    )
                    when 'shop' then fitting.passes and fitting.score >= best.score - %1$s
                    else false
                end$condition$,
                score_window
            )
        ),
        price_margin
    );

    -- Scratch tables live for this transaction (and a transaction pooler's
    -- server connection) alone.
    drop table if exists
        pg_temp.assign_placed, pg_temp.assign_options, pg_temp.assign_won,
        pg_temp.assign_rivals, pg_temp.assign_movers, pg_temp.assign_second_look;
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
        --    their candidates placed so far that no member blocks (an ambiguous
        --    listing's only through a link or an equal GTIN).
        execute format(
            'create temp table assign_options on commit drop as
             select %5$s
             from %1$s as candidate
             inner join assign_placed as placed on candidate.neighbour_id = placed.bike_id
             inner join %2$s as listing on candidate.bike_id = listing.bike_id
             where
                 candidate.shop_rank = %3$s
                 and (placed.matched_via <> ''ambiguous'' or candidate.evidence <> ''embedding'')
                 and not exists (
                     select
                     from assign_placed as fellow
                     inner join %2$s as member on fellow.bike_id = member.bike_id
                     where fellow.cluster_id = placed.cluster_id and (%4$s)
                 )',
            candidates, listings, shop, blocks, option_columns
        );

        -- 2b. Rival products (see `decide`).
        execute format(
            'create temp table assign_rivals on commit drop as
             select decided.bike_id, decided.cluster_id
             from (%s) as decided
             where decided.rival_count > 1',
            decide
        );
        delete from assign_options as option
        using assign_rivals as rival
        where
            option.bike_id = rival.bike_id
            and option.cluster_id is distinct from rival.cluster_id;
        delete from assign_options as option
        where not option.passes;

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

        -- 4. Placed: the winners in their clusters, the others as seeds (the
        --    ambiguous ones marked so).
        execute format(
            'insert into assign_placed
             select
                 listing.bike_id,
                 coalesce(won.cluster_id, bikematch_cluster_id(listing.webshop, listing.url)),
                 coalesce(
                     won.matched_via,
                     case when rival.bike_id is not null then ''ambiguous'' else ''seed'' end
                 ),
                 won.matched_bike_id,
                 won.similarity,
                 won.score
             from %s as listing
             left join assign_won as won on listing.bike_id = won.bike_id
             left join assign_rivals as rival
                 on listing.bike_id = rival.bike_id and rival.cluster_id is null
             where listing.shop_rank = %s',
            listings, shop
        );
        drop table assign_options, assign_won, assign_rivals;
    end loop;

    -- 5. A second look, once every shop is placed: a listing that joined by its
    --    similarity saw only the clusters of shops placed before its own, and a
    --    listing that seeded a cluster (an anchor listing, or one that found no
    --    cluster to join) none seeded after it. When a cluster seeded later is a
    --    rival of its own (or of the best it now fits), 2b decides again with every cluster
    --    known: the listing moves to the one clearly nearest in price, or stays
    --    alone (ambiguous) when none is. Listings held by a link or an equal GTIN
    --    stay; a cluster still takes at most `max_per_shop` listings of a shop.
    execute format(
        'create temp table assign_movers on commit drop as
         select placed.bike_id, placed.cluster_id, listing.webshop, listing.url
         from assign_placed as placed
         inner join %2$s as listing on placed.bike_id = listing.bike_id
         where
             (placed.matched_via like ''embedding%%'' or placed.matched_via in (''anchor'', ''seed''))
             and not exists (
                 select
                 from %1$s as firm
                 inner join assign_placed as fellow on firm.neighbour_id = fellow.bike_id
                 where
                     firm.bike_id = placed.bike_id
                     and firm.evidence <> ''embedding''
                     and fellow.cluster_id = placed.cluster_id
             )',
        candidates, listings
    );
    -- (statistics, so that the planner sizes the joins below)
    analyze assign_placed;
    analyze assign_movers;
    execute format(
        'create temp table assign_options on commit drop as
         select %5$s
         from %1$s as candidate
         inner join assign_movers as mover on candidate.bike_id = mover.bike_id
         inner join assign_placed as placed on candidate.neighbour_id = placed.bike_id
         inner join %2$s as listing on candidate.bike_id = listing.bike_id
         left join (
             select fellow.cluster_id, member.webshop, count(*) as listings
             from assign_placed as fellow
             inner join %2$s as member on fellow.bike_id = member.bike_id
             group by fellow.cluster_id, member.webshop
         ) as taken on placed.cluster_id = taken.cluster_id and listing.webshop = taken.webshop
         where
             candidate.evidence = ''embedding''
             and placed.matched_via <> ''ambiguous''
             and not exists (
                 select
                 from assign_placed as fellow
                 inner join %2$s as member on fellow.bike_id = member.bike_id
                 where
                     fellow.cluster_id = placed.cluster_id
                     and fellow.bike_id <> listing.bike_id
                     and (%3$s)
             )
             and coalesce(taken.listings, 0)
             - case when placed.cluster_id = mover.cluster_id then 1 else 0 end < %4$s',
        candidates, listings, blocks, max_per_shop, option_columns
    );
    analyze assign_options;
    execute format(
        'create temp table assign_second_look on commit drop as
         select
             mover.bike_id,
             mover.webshop,
             mover.url,
             decided.cluster_id,
             chosen.matched_bike_id,
             chosen.similarity,
             chosen.score,
             chosen.fit,
             chosen.matched_via
         from (%2$s) as decided
         inner join assign_movers as mover on decided.bike_id = mover.bike_id
         left join lateral (
             select option.*
             from assign_options as option
             where option.bike_id = decided.bike_id and option.cluster_id = decided.cluster_id
             order by option.preference
             limit 1
         ) as chosen on true
         where
             decided.cluster_id is distinct from mover.cluster_id
             -- the listing that seeded its cluster (whose id it carries) moves only
             -- to another cluster, never to stand alone
             and (
                 decided.cluster_id is not null
                 or mover.cluster_id <> bikematch_cluster_id(mover.webshop, mover.url)
             )
             and (
                 mover.cluster_id = decided.best_cluster_id
                 or %1$s
             )',
        format(
            clusters_rival,
            listings,
            rivals,
            'mover.cluster_id',
            'decided.best_cluster_id',
            'mover.bike_id',
            'rivalry.why is not null'
        ),
        decide
    );
    -- Two listings of one shop moving to one cluster: the better fit goes.
    delete from assign_second_look as look
    using (
        select
            mover.bike_id,
            row_number() over (
                partition by mover.cluster_id, mover.webshop order by mover.fit desc, mover.bike_id
            ) as place
        from assign_second_look as mover
        where mover.cluster_id is not null
    ) as ranked
    where look.bike_id = ranked.bike_id and ranked.place > 1;
    update assign_placed as placed
    set
        cluster_id = coalesce(look.cluster_id, bikematch_cluster_id(look.webshop, look.url)),
        matched_via = coalesce(look.matched_via, 'ambiguous'),
        matched_bike_id = look.matched_bike_id,
        similarity = look.similarity,
        score = look.score
    from assign_second_look as look
    where placed.bike_id = look.bike_id;

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
