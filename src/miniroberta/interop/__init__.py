"""Checkpoints and formats: native safetensors, HuggingFace export, UER-py keys, conversion."""
