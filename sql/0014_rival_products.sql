-- The assignment places rival products apart (arguments `rivals`, `score_window`,
-- `price_margin`): the old signature goes.
drop function if exists bikematch_assign_clusters(regclass, regclass, integer, integer, text);

-- The functions are defined in sql/functions/ (applied after the migrations).
-- A database that applied this file's earlier text, which defined them here,
-- is up to date:
-- supersedes e33487c03963656a66721323bee3cb6102a9734c1845a36a314345910f929545
