"""Inference: the pipelines (``pipelines.py``: fill-mask, embed, classify), their backends (``backends.py``:
PyTorch or a verified ONNX graph in onnxruntime), ONNX export (``onnx_export.py``) and the commands' settings
(``config.py``)."""
