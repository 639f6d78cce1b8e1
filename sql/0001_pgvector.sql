-- pgvector >= 0.7 provides vector, halfvec and HNSW indexes.
create extension if not exists vector;
