"""Small generated classification tasks and a tiny random model for the fine-tuning tests.

Labels are determined by keywords, so a 2-layer random model learns them in a few dozen steps.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILLER = list("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你")
KEYWORDS = list("好坏甲乙丙丁")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path, chars=None) -> Path:
    chars = chars if chars is not None else FILLER + KEYWORDS
    toks = SPECIALS + sorted(dict.fromkeys(chars))
    path.write_text("".join(t + "\n" for t in toks), encoding="utf-8")
    return path


def _sent(rng: random.Random, keyword: str | None, n: int = 8) -> str:
    s = [rng.choice(FILLER) for _ in range(n)]
    if keyword:
        s.insert(rng.randrange(len(s) + 1), keyword)
    return "".join(s)


def single_task(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text): label 1 iff the sentence contains 好, 0 iff it contains 坏."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.randrange(2)
        out.append((str(y), _sent(rng, "好" if y else "坏")))
    return out


def pair_task(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(text_a, text_b, label): the label is the keyword of text_b (甲 -> 1, 乙 -> 0); text_a holds a
    random distractor keyword, so the model must tell the segments apart."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.randrange(2)
        out.append((_sent(rng, rng.choice("甲乙")), _sent(rng, "甲" if y else "乙"), str(y)))
    return out


MULTI_CODES = {"100": "甲", "101": "乙", "103": "丙", "107": "丁"}   # CLUE-like codes with gaps


def multi_task(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    codes = list(MULTI_CODES)
    out = []
    for i in range(n):
        c = rng.choice(codes)
        out.append({"id": i, "label": c, "label_desc": f"class_{c}", "sentence": _sent(rng, MULTI_CODES[c])})
    return out


def write_single(d: Path, n_train: int = 256, n_dev: int = 64) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.tsv", n_train, 1), ("dev.tsv", n_dev, 2)):
        rows = single_task(n, seed)
        (d / name).write_text("label\ttext_a\n" + "".join(f"{y}\t{t}\n" for y, t in rows), encoding="utf-8")
    (d / "test_nolabel.tsv").write_text("text_a\n" + "".join(f"{t}\n" for _, t in single_task(10, 3)),
                                        encoding="utf-8")
    return d


def write_pair(d: Path, n_train: int = 384, n_dev: int = 64) -> Path:
    """lcqmc's column order: text_a, text_b, label."""
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.tsv", n_train, 4), ("dev.tsv", n_dev, 5)):
        rows = pair_task(n, seed)
        (d / name).write_text("text_a\ttext_b\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows),
                              encoding="utf-8")
    return d


def write_multi(d: Path, n_train: int = 320, n_dev: int = 64) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.json", n_train, 6), ("dev.json", n_dev, 7)):
        (d / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in multi_task(n, seed)),
                              encoding="utf-8")
    test = [{"id": 1000 + r["id"], "sentence": r["sentence"], "keywords": ""} for r in multi_task(12, 8)]
    (d / "test.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test), encoding="utf-8")
    return d


def tiny_model(path: Path, vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A randomly initialised native checkpoint (MLM model, as pretraining writes it)."""
    from miniroberta.interop.checkpoint import save_native
    from miniroberta.modeling.config import ModelConfig
    from miniroberta.modeling.bert import build_mlm
    cfg = ModelConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=4 * hidden, max_position_embeddings=128)
    m = build_mlm(cfg, seed=seed)
    save_native(path, m.state_dict(), cfg, {"note": "random init for tests"})
    return path
