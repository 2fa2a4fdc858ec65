"""Optional: TensorFlow's BERT (transformers<5 + tensorflow + tf-keras) reads our HF export with
``from_pt=True`` and gives our hidden states. Runs only in its own environment -- see docs/convert.md:

    python -m pytest -m tf tests/test_tf_export.py
"""
import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.tf


def _tf_stack_available() -> str | None:
    """None when usable, else the reason to skip."""
    try:
        import transformers
    except ImportError:
        return "transformers is not installed"
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        return f"transformers {transformers.__version__} has no TensorFlow models (needs transformers<5)"
    for mod in ("tensorflow", "tf_keras"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed"
    return None


REASON = _tf_stack_available()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.parametrize("name,V", [("L2_H128", 500), ("L4_H256", 300)])
def test_tf_bert_from_pt_matches(tmp_path, name, V):
    from transformers import TFBertModel

    from miniroberta.modeling.config import preset
    from miniroberta.interop.export import write_hf_dir
    from miniroberta.modeling.bert import BertForMaskedLM

    cfg = preset(name, vocab_size=V)
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if n.endswith("LayerNorm.weight") else 0.05 * torch.randn_like(p))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                             + [f"t{i}" for i in range(V - 5)]))
    write_hf_dir(model.state_dict(), cfg, str(vocab), str(tmp_path / "hf"))

    ids = torch.randint(5, V, (2, 11), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    types = torch.zeros_like(ids)
    types[0, 6:] = 1
    with torch.no_grad():
        ours = model.eval()(ids, mask, types, output_hidden_states=True).hidden_states

    tf_model = TFBertModel.from_pretrained(str(tmp_path / "hf"), from_pt=True)
    out = tf_model(input_ids=ids.numpy(), attention_mask=mask.numpy(), token_type_ids=types.numpy(),
                   output_hidden_states=True, training=False)
    real = mask.numpy().astype(bool)
    assert len(out.hidden_states) == len(ours) == cfg.num_hidden_layers + 1
    for layer, (a, b) in enumerate(zip(ours, out.hidden_states)):
        np.testing.assert_allclose(a.numpy()[real], b.numpy()[real], atol=1e-4, rtol=1e-4,
                                   err_msg=f"hidden state {layer}")
