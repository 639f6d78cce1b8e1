{#-
    on-run-start: ANALYZE each source table that has no planner statistics, or
    whose rows changed by more than autovacuum's own trigger (50 + 10%) since its
    last ANALYZE. Autovacuum would do it too, but up to a minute later: a build
    that starts right after a first scrape and embed would otherwise be planned
    without statistics (the planner then takes `model = ...` for 0.5% of the
    vectors and picks nested loops: int_candidate_matches took 100 s instead of
    0.5 s on 4,400 listings).

    Skipped where it cannot be done now: a table locked by a concurrent index
    build waits for nothing (lock_timeout), and one this role does not own is
    left to autovacuum (ANALYZE then only warns).
-#}
{% macro analyze_stale_sources() %}
    {% if not execute %}
        {{ return("select 1") }}
    {% endif %}
    {% set tables = [] %}
    {% for source in graph.sources.values() if source.source_name == 'bikematch' %}
        {% do tables.append(source.identifier) %}
    {% endfor %}
    do $analyze$
    declare
        stale record;
    begin
        set local lock_timeout = '1s';
        for stale in
            select format('%I.%I', tables.schemaname, tables.relname) as relation
            from pg_stat_user_tables as tables
            where
                tables.schemaname = {{ sql_literal(var('source_schema')) }}
                and tables.relname in (
                    {%- for table in tables %}{{ sql_literal(table) }}{{ ', ' if not loop.last }}{% endfor -%}
                )
                and (
                    not exists (
                        select from pg_stats as stats
                        where stats.schemaname = tables.schemaname and stats.tablename = tables.relname
                    )
                    or tables.n_mod_since_analyze > 50 + 0.1 * tables.n_live_tup
                )
        loop
            begin
                execute 'analyze ' || stale.relation;
            exception when lock_not_available then
                raise notice 'bikematch: % is busy; its statistics are left to autovacuum', stale.relation;
            end;
        end loop;
    end
    $analyze$
{% endmacro %}
