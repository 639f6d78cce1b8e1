-- The embedder's work: which listings need a vector for a model.

-- What a vector was made from: the listing's title and image URL. A listing
-- whose current title or image URL hashes differently must be embedded again.
-- One definition, used by the embedder's work query and by dbt staging.
create or replace function bikematch_embedding_source(title text, image_url text)
returns text
language sql immutable parallel safe as $$
    select md5(coalesce(title, '') || chr(31) || coalesce(image_url, ''))
$$;

-- Listings that need a vector for a model: none yet, or made from another
-- title/image. A listing that failed is retried after 2^attempts minutes, up to
-- max_attempts, and at once when its title or image changes.
--
-- A listing whose image fails (404, timeout, not an image...) is embedded from
-- its title alone meanwhile (text_only, with its image_url still set), so it
-- takes part in matching instead of waiting for an image that may never come.
-- Such a vector counts as pending again whenever its failure may be retried, so
-- the image is still tried.
--
-- after_id: only listings with a larger id, for the embedder's claims, which
-- page through the pending set in id order. The range is applied to every
-- table the set reads: Postgres carries equalities across a join, not ranges,
-- so a range on the caller's side alone left each claim reading the listings,
-- vectors and failures before it (a run's claims cost grew with the square of
-- the table).
--
-- embedded_before: also the listings whose vector for the model was embedded
-- before this time, as when a new release of the embedder decodes or
-- preprocesses photos differently and the stored vectors should follow
-- (`bikematch embed --reembed-before TIME`). A vector written since counts as
-- done, so rerunning the same command after a kill resumes where it stopped.
create or replace function bikematch_listings_to_embed(
    model_name text,
    max_attempts integer default 5,
    after_id uuid default null,
    embedded_before timestamptz default null
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
        on
            vector.bike_id = listing.id and vector.model = model_name
            and (after_id is null or vector.bike_id > after_id)
    left join embedding_failures as failure
        on
            failure.bike_id = listing.id and failure.model = model_name
            and (after_id is null or failure.bike_id > after_id)
    where
        (after_id is null or listing.id > after_id)
        and (
            vector.bike_id is null
            or vector.source_hash is distinct from
            bikematch_embedding_source(listing.name, listing.image_url)
            or (vector.text_only and listing.image_url is not null)
            or vector.embedded_at < embedded_before
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
