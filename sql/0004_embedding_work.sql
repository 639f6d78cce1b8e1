-- What a vector was made from: the listing's title and image URL. A listing
-- whose current title or image URL hashes differently must be embedded again.
-- One definition, used by the embedder's work query and by dbt staging.
create or replace function bikematch_embedding_source(title text, image_url text)
returns text
language sql immutable parallel safe as $$
    select md5(coalesce(title, '') || chr(31) || coalesce(image_url, ''))
$$;

alter table vector_storage add column if not exists source_hash text;
alter table embedding_failures add column if not exists source_hash text;

-- Listings that need a vector for a model: none yet, or made from another
-- title/image. A listing that failed is retried after 2^attempts minutes, up
-- to max_attempts, and at once when its title or image changes.
create or replace function bikematch_listings_to_embed(
    model_name text, max_attempts integer default 5
)
returns table (bike_id uuid, name text, image_url text, source_hash text)
language sql stable as $$
    select
        listing.id,
        listing.name,
        listing.image_url,
        bikematch_embedding_source(listing.name, listing.image_url)
    from scraped_bikes as listing
    left join vector_storage as vector
        on vector.bike_id = listing.id and vector.model = model_name
    left join embedding_failures as failure
        on failure.bike_id = listing.id and failure.model = model_name
    where
        (
            vector.bike_id is null
            or vector.source_hash is distinct from
            bikematch_embedding_source(listing.name, listing.image_url)
        )
        and (
            failure.bike_id is null
            or failure.source_hash is distinct from
            bikematch_embedding_source(listing.name, listing.image_url)
            or (
                failure.attempts < max_attempts
                and failure.last_attempt_at
                < now() - make_interval(mins => power(2, failure.attempts)::integer)
            )
        )
$$;
