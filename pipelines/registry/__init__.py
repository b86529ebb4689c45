"""Where runs and models are kept: the MLflow tracking server (`server`: process, auth,
network)."""
