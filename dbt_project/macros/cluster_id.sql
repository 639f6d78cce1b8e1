{#-
    A cluster's id, derived from its seed listing's natural key (webshop, url):
    the same seed gives the same id on every run and in every database, and
    the id does not depend on the order rows were inserted in.
-#}
{% macro cluster_id(webshop, url) -%}
    md5('bikematch-cluster' || chr(31) || {{ webshop }} || chr(31) || {{ url }})::uuid
{%- endmacro %}
