-- Which cluster (product) each listing joins: bikematch_assign_clusters, a loop
-- over the shops that dbt's master_bikes calls, and bikematch_cluster_id.

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes 02df28921733daf705bc621af30f031dcc40ca7ef74293117e05587759967aa9
