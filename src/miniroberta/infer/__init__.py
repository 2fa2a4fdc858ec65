"""Inference pipelines: fill-mask and embeddings."""
