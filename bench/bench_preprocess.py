"""Preprocessing throughput and peak memory: `miniroberta preprocess` vs a pure-Python baseline.

What is measured, in one run (the machine is shared, so only ratios taken in the same run mean much):

* ours, end to end (`python -m miniroberta.cli preprocess`, a fresh process, start-up included) on the
  whole corpus directory (../shared/data/corpus, 63 MB) with 2 processes and with 1 process. Peak
  RSS of the whole process tree (parent + workers) is sampled from /proc every 20 ms; the
  getrusage figure (parent peak + largest child peak x workers) is reported as an upper bound.
* the baseline: the same instances built with transformers' pure-Python ``BertTokenizerLegacy``
  (``max_input_chars_per_word=200`` like the reference), one process, on the first
  ``--baseline_mb`` MB of the same corpus (it is about 40x slower, so a slice), then windowed and
  saved in the same format. Ours is run on the same slice too, and the two datasets must be
  identical (ids and offsets) -- the speed-up is for the same output.

Usage: python bench/bench_preprocess.py [--corpus DIR] [--vocab FILE] [--baseline_mb 6] [--out JSON]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


# ----------------------------------------------------------------------------- memory sampling
def _tree_pids(root: int) -> list[int]:
    pids, stack = [], [root]
    while stack:
        p = stack.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    stack.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return pids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], workers: int) -> dict:
    """Run ``cmd``; wall time, sampled peak RSS of its process tree, getrusage upper bound."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], sum(_rss_kb(p) for p in _tree_pids(proc.pid)))
            done.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "peak_rss_tree_mb": peak[0] / 1024,
            "rusage_children_maxrss_mb": after.ru_maxrss / 1024,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "stderr_tail": err[-1500:]}


def ours(corpus: str, vocab: str, out: str, processes: int, max_bytes: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "miniroberta.cli", "preprocess", "--corpus_path", corpus, "--vocab_path", vocab,
           "--dataset_path", out, "--processes_num", str(processes), "--seq_length", "128", "--dynamic_masking",
           "--data_processor", "mlm", "--overwrite"]
    if max_bytes is not None:
        cmd += ["--max_bytes", str(max_bytes)]
    r = run_measured(cmd, processes)
    m = json.loads((Path(out) / "manifest.json").read_text())
    size = m["corpus"]["size"]
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r.update(bytes=size, mb_per_s=size / 1e6 / r["wall_s"], mb_per_cpu_s=size / 1e6 / r["cpu_s"], mb_per_s_inside=size / 1e6 / m["stats"]["seconds"],
             build_seconds=m["stats"]["seconds"], processes=processes, num_documents=m["num_documents"],
             num_instances=m["num_instances"], num_tokens=m["num_tokens"],
             continuation_windows=m["continuation_windows"], fill_ratio=m["stats"]["fill_ratio"],
             unk_rate=m["stats"]["unk_rate"],
             peak_rss_upper_bound_mb=r["rusage_children_maxrss_mb"] * max(1, processes) + self_peak)
    r.pop("stderr_tail")
    return r


# ----------------------------------------------------------------------------- baseline
def baseline(corpus: str, vocab: str, out: str, max_bytes: int) -> dict:
    """Pure-Python tokenizer (transformers' BertTokenizerLegacy), windows as the mlm processor."""
    from transformers import BertTokenizerLegacy

    from miniroberta.data.preprocess import plan_tasks, resolve_corpus
    files = resolve_corpus(corpus)
    _, used = plan_tasks(files, 1, max_bytes)
    t0 = time.perf_counter()
    c0 = time.process_time()
    tok = BertTokenizerLegacy(vocab, do_lower_case=True)
    tok.wordpiece_tokenizer.max_input_chars_per_word = 200          # the reference's (Google's) value
    cls_id, sep_id = tok.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    S = 128
    ids_all: list[int] = []
    lengths: list[int] = []
    for f, u in zip(files, used):
        if not u:
            continue
        with open(f, "rb") as fh:
            text = fh.read(u).decode("utf-8")
        for line in text.split("\n"):
            if not line:
                continue
            doc = [cls_id] + tok.convert_tokens_to_ids(tok.tokenize(line)) + [sep_id]
            if len(doc) == 2:
                continue
            for k in range(0, len(doc), S):
                w = doc[k:k + S]
                ids_all.extend(w)
                lengths.append(len(w))
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "tokens.npy"), np.array(ids_all, dtype=np.uint16))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(os.path.join(out, "offsets.npy"), offsets)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    size = sum(used)
    return {"wall_s": wall, "cpu_s": cpu, "mb_per_cpu_s": size / 1e6 / cpu, "bytes": size, "mb_per_s": size / 1e6 / wall, "num_instances": len(lengths),
            "num_tokens": len(ids_all), "processes": 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(DATA / "corpus"))
    ap.add_argument("--vocab", default=str(DATA / "vocab" / "google_zh_vocab.txt"))
    ap.add_argument("--baseline_mb", type=float, default=6.0, help="size of the slice the baseline runs on")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "preprocess.json"))
    args = ap.parse_args()
    if not Path(args.corpus).exists() or not Path(args.vocab).exists():
        print(f"corpus or vocab missing ({args.corpus}, {args.vocab})", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench_preprocess.")
    load_before = os.getloadavg()
    try:
        slice_bytes = int(args.baseline_mb * 1e6)
        print(f"[bench] baseline (BertTokenizerLegacy, 1 process) on the first {args.baseline_mb} MB ...", flush=True)
        base = baseline(args.corpus, args.vocab, os.path.join(tmp, "base"), slice_bytes)
        print(f"[bench]   {base['mb_per_s']:.3f} MB/s", flush=True)
        print("[bench] ours on the same slice (2 processes) ...", flush=True)
        ours_slice = ours(args.corpus, args.vocab, os.path.join(tmp, "slice"), 2, slice_bytes)
        same = all(np.array_equal(np.load(os.path.join(tmp, "base", n)), np.load(os.path.join(tmp, "slice", n)))
                   for n in ("tokens.npy", "offsets.npy"))
        if not same:
            raise SystemExit("baseline and miniroberta datasets differ on the slice -- not the same instances")
        print(f"[bench]   {ours_slice['mb_per_s']:.2f} MB/s, identical instances: {same}", flush=True)
        print("[bench] ours on the whole corpus, 2 processes ...", flush=True)
        full2 = ours(args.corpus, args.vocab, os.path.join(tmp, "full2"), 2)
        print(f"[bench]   {full2['mb_per_s']:.2f} MB/s, peak RSS {full2['peak_rss_tree_mb']:.0f} MB", flush=True)
        print("[bench] ours on the whole corpus, 1 process ...", flush=True)
        full1 = ours(args.corpus, args.vocab, os.path.join(tmp, "full1"), 1)
        print(f"[bench]   {full1['mb_per_s']:.2f} MB/s, peak RSS {full1['peak_rss_tree_mb']:.0f} MB", flush=True)
        same_full = all((Path(tmp) / "full1" / n).read_bytes() == (Path(tmp) / "full2" / n).read_bytes()
                        for n in ("tokens.npy", "offsets.npy"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "benchmark": "preprocess",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                 "note": "shared 2-core machine with other CPU-heavy jobs running; absolute MB/s are noisy, "
                         "ratios are measured in the same run"},
        "corpus": args.corpus, "vocab": args.vocab, "seq_length": 128,
        "baseline": {**base, "tokenizer": "transformers.BertTokenizerLegacy (pure Python)",
                     "slice_mb": args.baseline_mb},
        "ours_slice_2proc": ours_slice,
        "ours_full_2proc": full2,
        "ours_full_1proc": full1,
        "identical_instances_baseline_vs_ours": same,
        "identical_bytes_1_vs_2_processes": same_full,
        "speedup_2proc_vs_baseline": full2["mb_per_s"] / base["mb_per_s"],
        "speedup_1proc_vs_baseline": full1["mb_per_s"] / base["mb_per_s"],
        "speedup_2proc_vs_baseline_same_slice": ours_slice["mb_per_s"] / base["mb_per_s"],
        "speedup_per_cpu_second_full_1proc": full1["mb_per_cpu_s"] / base["mb_per_cpu_s"],
        "speedup_per_cpu_second_full_2proc": full2["mb_per_cpu_s"] / base["mb_per_cpu_s"],
        "target": {"speedup_min": 20, "peak_rss_max_mb": 1024},
    }
    res["meets_target"] = bool(res["speedup_2proc_vs_baseline"] >= 20 and full2["peak_rss_tree_mb"] < 1024)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(json.dumps({k: res[k] for k in ("speedup_2proc_vs_baseline", "speedup_1proc_vs_baseline",
                                          "speedup_2proc_vs_baseline_same_slice",
                                          "speedup_per_cpu_second_full_1proc",
                                          "speedup_per_cpu_second_full_2proc", "meets_target")}, indent=2))
    print(f"[bench] full corpus: 2 proc {full2['mb_per_s']:.2f} MB/s ({full2['peak_rss_tree_mb']:.0f} MB peak tree "
          f"RSS), 1 proc {full1['mb_per_s']:.2f} MB/s; baseline {base['mb_per_s']:.3f} MB/s; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
