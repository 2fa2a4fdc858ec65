"""The export's parity check: transformers' ``BertForMaskedLM`` loaded from the exported folder against our
model loaded from the native checkpoint, on a few corpus sentences."""
from __future__ import annotations

import contextlib
import os
from types import ModuleType
from typing import Any, Iterator

import torch

from miniroberta.interop.checkpoint import load_model
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.study.steps import versions


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers / huggingface_hub progress bars (``Loading weights: 100%|...``) in a study's log while
    the block runs; the previous settings are restored after."""
    import transformers.utils.logging as tlog  # noqa: PLC0415 -- optional (transformers): the parity check only
    hub: ModuleType | None
    try:
        import huggingface_hub.utils as hub  # noqa: PLC0415 -- optional (transformers): the parity check only
    except ImportError:  # pragma: no cover - transformers requires it
        hub = None
    was_t = tlog.is_progress_bar_enabled()
    was_h = hub is not None and not hub.are_progress_bars_disabled()
    env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    tlog.disable_progress_bar()
    if hub is not None:
        hub.disable_progress_bars()
    try:
        yield
    finally:
        if was_t:
            tlog.enable_progress_bar()
        if was_h and hub is not None:
            hub.enable_progress_bars()
        if env is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env


def parity_check(checkpoint: str, hf_dir: str, vocab: str, texts: list[str], atol: float = 1e-4) -> dict[str, Any]:
    """MLM logits of transformers' ``BertForMaskedLM.from_pretrained(hf_dir)`` vs our model from the
    native checkpoint, on ``texts`` (padded batch). Records max |diff| and argmax agreement."""
    from transformers import BertForMaskedLM as HFBertForMaskedLM  # noqa: PLC0415 -- optional (transformers): the parity check only

    ours, _ = load_model(checkpoint, "mlm")
    ours.eval()
    with quiet_transformers():
        theirs = HFBertForMaskedLM.from_pretrained(hf_dir)
    theirs.eval()
    tok = BertTokenizer(vocab)
    encs = [tok.encode(t, max_length=64) for t in texts]
    length = max(len(e.input_ids) for e in encs)
    ids = torch.zeros(len(encs), length, dtype=torch.long)
    mask = torch.zeros(len(encs), length, dtype=torch.long)
    types = torch.zeros(len(encs), length, dtype=torch.long)
    for i, e in enumerate(encs):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        types[i, :n] = torch.tensor(e.token_type_ids)
        mask[i, :n] = 1
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types).logits
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    real = mask.bool()
    diff = (a - b).abs()[real]
    max_diff = float(diff.max())
    agree = float((a.argmax(-1) == b.argmax(-1))[real].float().mean())
    return {"max_abs_diff": max_diff, "atol": atol, "passed": bool(max_diff <= atol), "argmax_agreement": agree,
            "tokens": int(real.sum()), "reference": f"transformers {versions()['transformers']} BertForMaskedLM",
            "layer_norm_type": ours.config.layer_norm_type}


__all__ = ["parity_check", "quiet_transformers"]
