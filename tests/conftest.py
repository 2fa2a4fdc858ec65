from pathlib import Path

import numpy as np
import pytest
import torch

from miniroberta.modeling.config import preset


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one torch thread avoids OpenMP stalls (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- shared builders (vocab, tiny model, tiny corpus)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path, tokens=None, n: int = 64):
    """A BERT vocab.txt at ``path``: the five special tokens, then ``tokens`` (default: the first ``n - 5``
    CJK ideographs from 一, one token each). Returns the path."""
    toks = SPECIAL_TOKENS + (list(tokens) if tokens is not None else [chr(0x4E00 + i) for i in range(n - 5)])
    Path(path).write_text("".join(t + "\n" for t in toks), encoding="utf-8")
    return Path(path)


@pytest.fixture
def make_vocab(tmp_path):
    """``make_vocab(tokens=None, n=64, name="vocab.txt")`` -> the path of a vocab written by ``write_vocab``."""
    def make(tokens=None, n: int = 64, name: str = "vocab.txt"):
        return write_vocab(tmp_path / name, tokens, n)
    return make


@pytest.fixture
def vocab_file(make_vocab):
    """A 64-token vocab: the specials, then 59 CJK ideographs (一 丁 丂 ...)."""
    return make_vocab()


@pytest.fixture
def tiny_model_config():
    """The ``tiny`` miniature (2 layers, hidden 128) over the 64-token ``vocab_file``."""
    return preset("tiny", vocab_size=64)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """(corpus, vocab): 400 lines of 1..299 ideographs drawn from a 64-token vocab (seeded), one module-wide copy."""
    d = tmp_path_factory.mktemp("tiny_corpus")
    vocab = write_vocab(d / "vocab.txt")
    rng = np.random.default_rng(0)
    lines = ["".join(chr(0x4E00 + int(i)) for i in rng.integers(0, 59, rng.integers(1, 300))) for _ in range(400)]
    (d / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d / "c.txt", vocab
