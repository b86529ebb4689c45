"""Self-supervised pretraining (`mura pretrain`): a VICReg encoder on Ray Train, from shards,
logged and registered in MLflow; `weights` resolves `mura train --weights models:/…`.

Light on purpose (no imports): Ray Train workers import `pipelines.pretrain.loop` only, and
`pipelines.train.prepare` imports `pipelines.pretrain.weights` without the pretraining driver.
"""
