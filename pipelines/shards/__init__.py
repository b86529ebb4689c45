"""Shards read: shard sets for training and evaluation (shardsets), scored by a model's actor
pool (predict)."""
