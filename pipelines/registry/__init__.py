"""Where runs and models are kept and chosen: MLflow runs opened and logged (`tracking`),
models logged, registered and fetched (`model_store`), training runs side by side (`runs`,
shown by `runs_table`), promotion to an alias (`promote`), and the MLflow tracking server
(`server`: config, process, auth, network)."""
