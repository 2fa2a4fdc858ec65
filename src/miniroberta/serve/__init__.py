"""HTTP serving: ``miniroberta serve`` (``app.py``) with dynamic micro-batching (``batcher.py``); every request
bounded before any model work by ``protocol.py`` (connections, headers), ``guard.py`` (key, in-flight, body,
request id, errors) and ``requests.py`` (fields, texts, masks, candidates); settings in ``config.py``."""
