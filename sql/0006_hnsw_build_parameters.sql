-- HNSW indexes are built with a wider candidate list (ef_construction 200
-- instead of pgvector's default 64; see bikematch_hnsw_index_ddl). Indexes made
-- before this migration are dropped: the next `bikematch embed` or `bikematch
-- cluster` builds each again with the new parameters.
do $$
declare
    model embedding_models%rowtype;
begin
    for model in select * from embedding_models order by name loop
        execute format('drop index if exists %I', bikematch_hnsw_index_name(model.name));
    end loop;
end;
$$;

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes 0c2da9a270de8127841c2af89fdc0dfe8155056c99f70fa8aa7477eb75f1f403
