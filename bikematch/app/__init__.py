"""The application: orchestration of the job, cluster running, evaluation and
calibration, the report, search, the demo and the command line. It sits on top of
`scrapers`, `embedder` and `perception_models`, which never import it."""
