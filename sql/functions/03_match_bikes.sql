-- Nearest listings to a query embedding (the app's visual and text search),
-- callable as a Supabase RPC: select * from match_bikes('[...]', 0.5, 10, 'pe-core-l14-336').
-- The query must be a combined [image, text] embedding of the model's size
-- (zeros in a half searches by the other half alone). It runs through the
-- model's HNSW index: the dynamic statement is planned with the model name
-- and dimension as constants, which the partial expression index needs.
create or replace function match_bikes(
    query_embedding halfvec,
    match_threshold double precision,
    match_count integer,
    model_name text
)
returns table (
    bike_id uuid,
    webshop text,
    name text,
    price numeric,
    currency text,
    url text,
    image_url text,
    similarity double precision
)
language plpgsql stable as $$
declare
    dims integer;
begin
    select image_dims + text_dims into dims from embedding_models where embedding_models.name = model_name;
    if dims is null then
        raise exception 'no vectors for model %', model_name using errcode = 'no_data_found';
    end if;
    if vector_dims(query_embedding) <> dims then
        raise exception 'query has % dimensions; model % has %',
            vector_dims(query_embedding), model_name, dims using errcode = 'data_exception';
    end if;
    return query execute format(
        'select * from ('
        '  select listing.id, listing.webshop, listing.name, listing.price,'
        '      listing.currency::text, listing.url, listing.image_url,'
        '      1 - (vector.embedding::halfvec(%1$s) <=> $1::halfvec(%1$s)) as similarity'
        '  from vector_storage as vector'
        '  inner join scraped_bikes as listing on listing.id = vector.bike_id'
        '  where vector.model = %2$L'
        '  order by vector.embedding::halfvec(%1$s) <=> $1::halfvec(%1$s)'
        '  limit $2'
        ') as nearest where nearest.similarity >= $3',
        dims, model_name
    ) using query_embedding, match_count, match_threshold;
end;
$$;
