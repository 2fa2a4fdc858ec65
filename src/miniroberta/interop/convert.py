"""``miniroberta convert``: between native, HuggingFace and UER-py checkpoints.

Input: anything ``checkpoint.load_weights`` reads (native safetensors, HF directory, HF
``pytorch_model.bin`` / ``model.safetensors`` with ``config.json`` beside it, UER-py
``model.bin-<step>`` of either key vintage). Output format (``--output_format``, else inferred
from ``--output_model_path``):

* ``hf``     -- a directory (existing, ending in ``/``, or a name without a suffix) gets a complete HF
  model directory; a file named ``pytorch_model.bin`` or ``model.safetensors`` is written as that
  file with ``config.json``, ``vocab.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``
  and the model card ``README.md`` beside it (the reference command's form).
* ``native`` -- any other ``*.safetensors`` file.
* ``uer``    -- ``*.bin-<step>``, ``*.uer``, ``*.bin``, ``*.pt``/``*.pth``: a UER-py state dict
  (``--uer_vintage new|old|2020`` key names) that UER-py's ``--pretrained_model_path`` loads.

The same names are the UER-py scripts' (``--input_model_path``, ``--output_model_path``,
``--layers_num``, ``--type``), so ``convert_bert_from_uer_to_huggingface.py`` command lines run with
only the program name changed.
"""
from __future__ import annotations

import argparse
import os
import re


from miniroberta.interop.checkpoint import CheckpointError, load_weights, save_native
from miniroberta.data.paths import resolve_vocab
from miniroberta.interop.export import (EXPORT_TYPES, HF_WEIGHT_NAMES, export_checkpoint, model_card, select_for_type,
                                        write_hf_dir, write_hf_files, _check_fits)
from miniroberta.interop.uer import VINTAGES, hf_to_uer
from miniroberta.integrity import atomic_torch_save
from miniroberta.outputs import claim_output
from miniroberta.utils import log, terminate_as_exit, write_error

OUTPUT_FORMATS = ("hf", "native", "uer")


def infer_output_format(path: str) -> str:
    """See the module docstring; raises when the name says nothing."""
    base = os.path.basename(path.rstrip("/\\"))
    if path.endswith(("/", os.sep)) or os.path.isdir(path) or base in HF_WEIGHT_NAMES:
        return "hf"
    if base.endswith(".safetensors"):
        return "native"
    if re.search(r"\.bin-\d+$", base) or base.endswith((".uer", ".bin", ".pt", ".pth")):
        return "uer"
    if "." not in base:
        return "hf"
    raise ValueError(f"--output_model_path {path}: cannot tell the output format from the name; "
                     f"pass --output_format {{hf,native,uer}}")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input_model_path", required=True,
                   help="native .safetensors, HF directory / pytorch_model.bin / model.safetensors, or UER-py model.bin-<step>")
    p.add_argument("--output_model_path", required=True,
                   help="HF directory or pytorch_model.bin/model.safetensors (HF files written beside it), "
                        "*.safetensors (native), *.bin-<step>/*.uer/*.bin (UER-py)")
    p.add_argument("--output_format", choices=OUTPUT_FORMATS, default=None,
                   help="override the format inferred from --output_model_path")
    p.add_argument("--layers_num", type=int, default=None,
                   help="UER-py compatibility: checked against the layer count found in the weights")
    p.add_argument("--type", choices=EXPORT_TYPES, default="mlm",
                   help="mlm: encoder + MLM head; bert: also pooler + NSP head (UER target.sp); "
                        "cls: a sequence classifier (UER output_layer_1/2)")
    p.add_argument("--config_path", default=None,
                   help="preset / UER-py config JSON / HF config.json; default: from the checkpoint or tensor shapes")
    p.add_argument("--vocab_path", default=None,
                   help="default: vocab.txt beside the input, else ../shared/data/vocab/google_zh_vocab.txt")
    p.add_argument("--uer_vintage", choices=VINTAGES, default="new",
                   help="UER-py key names to write: new (2023-07+), old (2021-2023, target.sp_linear_*), "
                        "2020 (target.nsp_linear_*)")
    p.add_argument("--layer_norm", choices=("hf", "uer"), default=None,
                   help="record this LayerNorm flavour in the output config (default: keep the input's; hf for UER-py input)")
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing output aside to NAME.old-<time> (HF files beside others: replace them)")


def convert(input_path: str, output_path: str, output_format: str | None = None, type: str = "mlm",
            layers_num: int | None = None, config_path: str | None = None, vocab_path: str | None = None,
            uer_vintage: str = "new", layer_norm: str | None = None, overwrite: bool = False) -> str:
    """Python API of ``miniroberta convert``; returns the path written. The output is claimed for the
    run (``outputs.claim_output``): a second convert to it fails at once, an existing output is refused
    unless ``overwrite`` (a folder or file is then moved aside to ``NAME.old-<time>``)."""
    fmt = output_format or infer_output_format(output_path)
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose from {OUTPUT_FORMATS}")
    hf_files = fmt == "hf" and os.path.basename(output_path) in HF_WEIGHT_NAMES and not os.path.isdir(output_path)
    if fmt != "hf" and os.path.isdir(output_path):
        raise ValueError(f"{output_path} is a directory; a native/UER-py checkpoint is one file")
    # hf files beside other files: write_hf_files checks (and with --overwrite replaces) them itself
    with claim_output(output_path, overwrite=overwrite and not hf_files, can_resume=False, command="convert",
                      what="an earlier conversion", check_existing=not hf_files):
        existed = os.path.exists(output_path)
        try:
            return _convert(input_path, output_path, fmt, hf_files, type, layers_num, config_path, vocab_path,
                            uer_vintage, layer_norm, overwrite)
        except OSError as e:         # a full disk, a read-only file system: one line naming the output
            err = write_error(output_path, e, existed)
            if err is e:
                raise
            raise err from None


def _convert(input_path: str, output_path: str, fmt: str, hf_files: bool, type: str, layers_num: int | None,
             config_path: str | None, vocab_path: str | None, uer_vintage: str, layer_norm: str | None,
             overwrite: bool) -> str:
    cfg, sd, meta = load_weights(input_path, config_path=config_path, layers_num=layers_num)
    if layers_num is not None and layers_num != cfg.num_hidden_layers:
        raise CheckpointError(f"{input_path}: --layers_num {layers_num} but the model has {cfg.num_hidden_layers} layers")
    if layer_norm is not None and layer_norm != cfg.layer_norm_type:
        cfg = cfg.with_layer_norm(layer_norm)
    sd, arch = select_for_type(sd, type, input_path)
    _check_fits(sd, cfg, type, input_path)
    meta = {**meta, "converted_from": os.path.abspath(input_path)}

    if fmt == "hf":
        vocab = resolve_vocab(input_path, vocab_path, meta)
        card = model_card(cfg, meta, type=type)
        if cfg.layer_norm_type == "uer":
            log("note: the config records UER-py's LayerNorm; transformers will run the standard one")
        if hf_files:
            write_hf_files(sd, cfg, vocab, output_path, architecture=arch, card=card, overwrite=overwrite)
        else:
            write_hf_dir(sd, cfg, vocab, output_path, architecture=arch, card=card, overwrite=True)
    elif fmt == "native":
        save_native(output_path, sd, cfg, meta)
    elif fmt == "uer":
        uer_sd = hf_to_uer(sd, vintage=uer_vintage, type=type)
        atomic_torch_save(uer_sd, output_path)
    return output_path


def run(args: argparse.Namespace) -> int:
    fmt = args.output_format or infer_output_format(args.output_model_path)
    with terminate_as_exit():            # SIGTERM: temp files are removed on the way out
        out = convert(args.input_model_path, args.output_model_path, output_format=fmt, type=args.type,
                      layers_num=args.layers_num, config_path=args.config_path, vocab_path=args.vocab_path,
                      uer_vintage=args.uer_vintage, layer_norm=args.layer_norm, overwrite=args.overwrite)
    log(f"wrote {fmt} checkpoint ({args.type}) to {out}")
    return 0


__all__ = ["convert", "configure", "run", "infer_output_format", "export_checkpoint", "model_card",
           "OUTPUT_FORMATS"]
