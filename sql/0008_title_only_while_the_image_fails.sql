-- A listing whose image fails (404, timeout, not an image...) is embedded from
-- its title alone meanwhile (text_only, with its image_url still set), so it
-- takes part in matching instead of waiting for an image that may never come.
-- Such a vector counts as pending again whenever its failure may be retried
-- (after 2^attempts minutes, up to max_attempts), so the image is still tried.
--
-- bikematch_listings_to_embed takes two new arguments (after_id, embedded_before),
-- which make a new function: the old one goes.
drop function if exists bikematch_listings_to_embed(text, integer);

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes c46116f22a94489c57729cc00d35e34a8381a99f023fc08fe7833c2fb29d80dc
