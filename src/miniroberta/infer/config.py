"""Settings of the inference commands: ``fill-mask``, ``embed`` and ``export-onnx``.

One dataclass per command, the single source of its options (``miniroberta.settings``): the command
line is generated from them and ``validate()`` names every bad value at once. ``ModelSource`` is what
``fill-mask`` and ``embed`` share: which model, run by what.
"""
from __future__ import annotations

from dataclasses import dataclass

from miniroberta.infer.backends import TASKS
from miniroberta.settings import option, validate

MODEL, RUN, OUTPUT, INT8 = "model", "running", "output", "int8 quantization"
POOLINGS = ("cls", "mean", "sequence")


@dataclass(kw_only=True)
class ModelSource:
    """The model a command runs: a PyTorch checkpoint or an export-onnx graph."""
    model: str | None = option(None, "HF directory, native .safetensors, HF pytorch_model.bin or UER-py "
                               "model.bin-<step>", effect="result", group=MODEL, default_text="not needed with --onnx")
    onnx: str | None = option(None, "run this `miniroberta export-onnx` graph (fp32 or int8) with onnxruntime "
                              "instead of PyTorch; its vocab and head kind are read from beside it and its "
                              "SHA-256 is checked", effect="result", group=MODEL, default_text="none")
    vocab_path: str | None = option(None, "vocab.txt", effect="result", group=MODEL,
                                    default_text="beside/inside --model or --onnx, else "
                                    "../shared/data/vocab/google_zh_vocab.txt")
    config_path: str | None = option(None, "model config when the checkpoint carries none", effect="result",
                                     group=MODEL, default_text="the checkpoint's")
    layers_num: int | None = option(None, "UER-py compatibility: the checkpoint's layer count (checked)",
                                    effect="result", group=MODEL, ge=1, default_text="the checkpoint's")
    layer_norm: str | None = option(None, "override the LayerNorm flavour", effect="result", group=MODEL,
                                    choices=("hf", "uer"), default_text="the checkpoint's")
    batch_size: int = option(32, "texts per model call", effect="speed", group=RUN, ge=1)
    threads: int = option(0, "intra-op threads (0: let the library choose)", effect="speed", group=RUN, ge=0)
    device: str = option("cpu", "cpu, cuda, cuda:1 ... (PyTorch only)", effect="speed", group=RUN)

    def problems(self) -> list[str]:
        return [] if self.model or self.onnx else ["pass --model DIR (PyTorch) or --onnx FILE (onnxruntime)"]


@dataclass(kw_only=True)
class FillMaskConfig(ModelSource):
    """``miniroberta fill-mask``: texts from the command line and/or ``--input``."""
    input: str | None = option(None, "a file with one text per line (blank lines skipped)", effect="result",
                               group=OUTPUT, default_text="none")
    top_k: int = option(5, "candidates per [MASK]", effect="result", group=OUTPUT, ge=1)
    json: bool = option(False, "print one JSON object per text: {\"text\": ..., \"predictions\": <the pipeline's "
                        "output>}", effect="result", group=OUTPUT)

    def validate(self) -> "FillMaskConfig":
        return validate(self, "fill-mask settings")


@dataclass(kw_only=True)
class EmbedConfig(ModelSource):
    """``miniroberta embed``: one feature row per input line, written to a .npy file."""
    input: str = option(help="one text per line; row i of the output is line i (a blank line embeds [CLS] [SEP])",
                        effect="result", group=OUTPUT)
    output: str = option(help="features .npy file; an existing one is refused unless --overwrite",
                         effect="result", group=OUTPUT, resume=False)
    pooling: str = option("cls", "cls: [CLS] vector (N,H); mean: mean over real tokens (N,H); sequence: "
                          "(N,seq_length,H)", effect="result", group=OUTPUT, choices=POOLINGS)
    seq_length: int = option(128, "tokens per text ([CLS] and [SEP] included); longer texts are cut",
                             effect="result", group=OUTPUT, ge=2)
    overwrite: bool = option(False, "move an existing --output aside (<name>.old-<time>) and write a new one",
                             effect="speed", group=OUTPUT)

    def validate(self) -> "EmbedConfig":
        return validate(self, "embed settings")


@dataclass(kw_only=True)
class ExportConfig:
    """``miniroberta export-onnx``."""
    model: str = option(help="HF directory, native checkpoint, or a fine-tune --output_dir (for --task classify)",
                        effect="result", group=MODEL)
    task: str = option(help="which head the graph computes", effect="result", group=MODEL, choices=TASKS)
    out: str = option(help="the .onnx file; vocab.txt and OUT.json (with the graph's SHA-256) are written beside "
                      "it; an existing one is refused unless --overwrite", effect="result", group=OUTPUT,
                      resume=False)
    overwrite: bool = option(False, "move an existing --out and its OUT.json aside (<name>.old-<time>) and export "
                             "anew", effect="speed", group=OUTPUT)
    quantize: str = option("none", "int8: onnxruntime dynamic quantization, its accuracy change measured and "
                           "recorded", effect="result", group=INT8, choices=("none", "int8"))
    vocab_path: str | None = option(None, "vocab.txt", effect="result", group=MODEL,
                                    default_text="beside/inside --model")
    opset: int = option(18, "ONNX opset", effect="result", group=OUTPUT, ge=14)
    eval_path: str | None = option(None, "what int8 is measured on: a labeled dev file (classify) or one text per "
                                   "line (fill-mask/embed)", effect="speed", group=INT8,
                                   default_text="the fine-tuning task's dev set in --data_dir, or the shared corpus")
    data_dir: str | None = option(None, "tasks folder", effect="speed", group=INT8,
                                  default_text="../shared/data/tasks")
    eval_limit: int = option(2000, "at most this many evaluation examples", effect="speed", group=INT8, ge=1)
    threads: int = option(0, "intra-op threads (0: let the library choose)", effect="speed", group=OUTPUT, ge=0)

    def problems(self) -> list[str]:
        return [] if self.out.endswith(".onnx") else [f"--out must name a .onnx file, got {self.out!r}"]

    def validate(self) -> "ExportConfig":
        return validate(self, "export-onnx settings")


__all__ = ["ModelSource", "FillMaskConfig", "EmbedConfig", "ExportConfig", "POOLINGS"]
