-- What a vector was made from (bikematch_embedding_source): kept with the vector
-- and with a failure, so a listing whose title or image changes is embedded again.
alter table vector_storage add column if not exists source_hash text;
alter table embedding_failures add column if not exists source_hash text;

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes 7cf938bbace7f63f41eb350a2b03fbcb2884f22ef4f6dea357dcd86f9c3c4619
