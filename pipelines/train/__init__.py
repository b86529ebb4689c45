"""Training on Ray Train: recipes from the papers, study-level evaluation, MLflow.

Light on purpose (no imports): the Ray Train controller and every training worker import
`pipelines.train.loop` and `pipelines.train.callback`, and must not bring the driver's MLflow,
plotting and evaluation imports (`pipelines.train.run`) with them (2-3 s of CPU for each
process they start). The driver imports `run.run_training`, `config.TrainConfig` and the rest
from their modules.
"""
