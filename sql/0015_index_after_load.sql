-- A large load writes a model's vectors without its HNSW index and builds the
-- index afterwards (embedder/index.py): bikematch_hnsw_index_ddl,
-- bikematch_hnsw_index_state and bikematch_add_model serve it.

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes c6b34c838634bb8d27694d93553b2c56c587de3cd47a800aa9e19254bc97677f
