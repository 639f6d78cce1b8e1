-- match_bikes: the nearest listings to a query embedding, callable as a
-- Supabase RPC.

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes e2b77c5d566b477ca71b30cd910faea06676de66d97b6c457936550b556169f5
