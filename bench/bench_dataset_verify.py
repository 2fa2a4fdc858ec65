"""What verifying a dataset's chunk hashes costs: open time and batch-source throughput, with and without.

Same process, arms interleaved (verify, no-verify, verify, ...), medians over ``--reps``:

* **open**: ``MlmDataset(path)`` -- verified (sizes, the first and last chunk of each array, 2 more sampled chunks of tokens) vs
  ``verify=False`` (the reading before chunk hashes: a full pass of value-range checks over the arrays);
* **first pass**: a fresh dataset, ``--batches`` micro-batches of ``--batch_size`` from the pretraining batch
  source (``pretrain.batches.BatchSource``, inline, no threads): every chunk an instance lands in is hashed
  the first time -- the cost a run pays once;
* **steady**: the same after ``verify_all()`` -- the per-instance bookkeeping that stays.

The dataset defaults to the whole shared corpus (``../shared/data/corpus``, ~64 MB) preprocessed at seq 128
into a temp folder (or ``--dataset_path`` of an existing one). Page cache warm in every arm (the first open
is discarded). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from miniroberta.data.dataset import MlmDataset  # noqa: E402
from miniroberta.data.masking import MaskingConfig, SpecialIds  # noqa: E402
from miniroberta.data.paths import data_root, default_vocab_path  # noqa: E402
from miniroberta.data.preprocess import build_dataset  # noqa: E402
from miniroberta.modeling.tokenizer import read_vocab  # noqa: E402
from miniroberta.pretrain.batches import BatchSource, Stream  # noqa: E402


def open_seconds(path: str, verify: bool) -> float:
    t = time.perf_counter()
    MlmDataset(path, verify=verify)
    return time.perf_counter() - t


def batches_tokens_per_s(path: str, special: SpecialIds, verify: bool, steady: bool, batches: int, bs: int) -> float:
    ds = MlmDataset(path, verify=verify)
    if steady:
        ds.verify_all()
    src = BatchSource(ds, Stream(len(ds), 7), special, MaskingConfig(seed=7), bs, 1, 0, 0, workers=0, pad_multiple=8)
    t = time.perf_counter()
    tokens = sum(src.next().real_tokens for _ in range(batches))
    return tokens / (time.perf_counter() - t)


def sha256_mb_per_s() -> float:
    b = os.urandom(1 << 20)
    t = time.perf_counter()
    for _ in range(64):
        hashlib.sha256(b).digest()
    return 64 * (1 << 20) / 1e6 / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset_path", default=None, help="an existing dataset (default: build one from the corpus)")
    ap.add_argument("--corpus", default=str(data_root() / "corpus"), help="corpus to build from")
    ap.add_argument("--reps", type=int, default=7, help="repetitions per arm (medians are reported)")
    ap.add_argument("--batches", type=int, default=200, help="micro-batches per throughput measurement")
    ap.add_argument("--batch_size", type=int, default=64, help="instances per micro-batch")
    args = ap.parse_args()
    vocab_path = str(default_vocab_path())
    special = SpecialIds.from_vocab(read_vocab(vocab_path))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.dataset_path
        if path is None:
            path = os.path.join(tmp, "corpus_seq128")
            build_dataset(args.corpus, vocab_path, path, seq_length=128, processes_num=min(2, os.cpu_count() or 1),
                          progress=False)
        m = MlmDataset(path).manifest                         # warms the page cache; discarded
        rows: dict[str, list[float]] = {k: [] for k in ("open_verified_s", "open_unverified_s", "first_verified",
                                                        "first_unverified", "steady_verified", "steady_unverified")}
        for _ in range(args.reps):
            for verify in (True, False):
                tag = "verified" if verify else "unverified"
                rows[f"open_{tag}_s"].append(open_seconds(path, verify))
                rows[f"first_{tag}"].append(batches_tokens_per_s(path, special, verify, False, args.batches,
                                                                 args.batch_size))
                rows[f"steady_{tag}"].append(batches_tokens_per_s(path, special, verify, True, args.batches,
                                                                  args.batch_size))
        t = time.perf_counter()
        MlmDataset(path).verify_all()
        full_pass = time.perf_counter() - t
    med = {k: statistics.median(v) for k, v in rows.items()}
    sizes = {n: e["size"] for n, e in m["chunk_hashes"]["files"].items()}
    out = {
        "dataset": {"instances": m["num_instances"], "tokens": m["num_tokens"], "array_bytes": sizes,
                    "chunk_bytes": m["chunk_hashes"]["chunk_bytes"]},
        "settings": vars(args), "load_average": os.getloadavg(), "sha256_MB_per_s": round(sha256_mb_per_s(), 1),
        "medians": {k: round(v, 5) if k.startswith("open") else round(v) for k, v in med.items()},
        "first_pass_cost_pct": round(100 * (1 - med["first_verified"] / med["first_unverified"]), 1),
        "steady_cost_pct": round(100 * (1 - med["steady_verified"] / med["steady_unverified"]), 1),
        "verify_all_s": round(full_pass, 3),
        "all": {k: [round(x, 5) for x in v] for k, v in rows.items()},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
