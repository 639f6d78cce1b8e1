-- The embedder no longer measures and stores its precision on each kind of machine:
-- `bikematch embed --dtype` says which to use, and `bikematch embed check-precision`
-- measures whether bfloat16 is safe and faster, once, when asked.
drop table if exists precision_choices;
