"""HTTP serving: ``miniroberta serve`` (``app.py``) with dynamic micro-batching (``batcher.py``)."""
