"""The metrics sinks the plan chooses (``aggregator.settings.metrics``): TensorBoard event files,
an MLflow run and a Prometheus endpoint, each fed the records of every closed round (the ones
logs/metrics.jsonl gets) and, for Prometheus, the engine's events and the server's refusals."""
