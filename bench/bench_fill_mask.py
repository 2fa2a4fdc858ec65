"""Fill-mask throughput: miniroberta's ``fill_mask`` vs ``transformers.pipeline('fill-mask')``.

Both run the SAME exported HF directory (random weights) on the same sentences in the same
process, alternating rounds so machine noise hits both alike; the figure of merit is the ratio.
Our ``fill_mask`` runs on each backend: PyTorch, and (when onnxruntime is installed) the
``export-onnx`` graph in fp32 and int8 -- what ``miniroberta fill-mask --onnx`` uses.

    python bench/bench_fill_mask.py                       # tiny + medium, batch 1 and 32
    python bench/bench_fill_mask.py --sizes tiny --rounds 5
    python bench/bench_fill_mask.py --quick               # smoke test (tiny, few sentences, 1 round; /tmp)

Writes ``bench/results/fill_mask.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from miniroberta.infer.backends import OnnxBackend
from miniroberta.infer.onnx_export import export_onnx
from miniroberta.infer.pipelines import fill_mask
from miniroberta.interop.checkpoint import load_model
from miniroberta.interop.export import write_hf_dir
from miniroberta.modeling.config import preset
from miniroberta.modeling.bert import build_mlm
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def sentences(n: int, seed: int = 0) -> list[str]:
    """n Chinese sentences (16-64 characters) with one [MASK], cut from the shared corpus."""
    rng = random.Random(seed)
    lines: list[str] = []
    corpus = sorted((DATA / "corpus").glob("*.txt")) if (DATA / "corpus").is_dir() else []
    if corpus:
        with open(corpus[0], encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if len(line) >= 20:
                    lines.append(line)
                if len(lines) >= 4 * n:
                    break
    if not lines:  # no shared data: synthetic Chinese text
        lines = ["".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(80)) for _ in range(4 * n)]
    out = []
    for line in rng.sample(lines, n):
        L = rng.randint(16, 64)
        s = line[:L]
        i = rng.randrange(len(s))
        out.append(s[:i] + "[MASK]" + s[i + 1:])
    return out


def timed(fn, texts: list[str]) -> tuple[float, float]:
    """Sentences per second of wall time and of this process's CPU time. On a shared, oversubscribed
    machine the CPU-time figure is the steadier one (the wall clock includes waiting for a core)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(texts)
    return len(texts) / (time.perf_counter() - t0), len(texts) / (time.process_time() - c0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "medium"])
    p.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per implementation (median reported)")
    p.add_argument("--sentences_bs1", type=int, default=16)
    p.add_argument("--sentences_batched", type=int, default=32)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both implementations (the shared CPU box is noisy with more)")
    p.add_argument("--top_k", type=int, default=5)
    p.add_argument("--vocab_path", default=str(DATA / "vocab" / "google_zh_vocab.txt"))
    p.add_argument("--output", default=None, help="default bench/results/fill_mask.json (--quick: a temp file)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "int8"], choices=["torch", "onnx", "int8"],
                   help="our backends (torch is always run: the rows' `ours` columns)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny only, 4/8 sentences, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.sentences_bs1, args.sentences_batched = ["tiny"], 1, 4, 8
    args.output = args.output or (os.path.join(tempfile.gettempdir(), "fill_mask.quick.json") if args.quick
                                  else str(ROOT / "bench" / "results" / "fill_mask.json"))
    return args


def onnx_backends_available(wanted: list[str]) -> list[str]:
    backends = [b for b in wanted if b != "torch"]
    if backends:
        try:
            import onnxruntime  # noqa: F401, PLC0415 - optional dependency
        except ImportError:
            print("onnxruntime not installed: PyTorch only (pip install -e '.[serve]')", file=sys.stderr)
            return []
    return backends


def bench_batch(args: argparse.Namespace, bs: int, tok: BertTokenizer, ours_model, pipe,
                graphs: dict[str, OnnxBackend]) -> dict:
    """One row: our fill_mask (each backend) against the pipeline at batch size ``bs``, alternating rounds."""
    texts = sentences(args.sentences_bs1 if bs == 1 else args.sentences_batched, seed=bs)
    ours = lambda t: fill_mask(ours_model, tok, t, top_k=args.top_k, batch_size=bs)  # noqa: E731
    theirs = lambda t: pipe(t, top_k=args.top_k, batch_size=bs)  # noqa: E731
    # warm-up + sanity: same top-1 tokens
    a, b = ours(texts[:4]), theirs(texts[:4])
    agree = sum(x[0]["token"] == y[0]["token"] for x, y in zip(a, b)) / 4
    others = {b: (lambda t, g=g: fill_mask(g, tok, t, top_k=args.top_k, batch_size=bs)) for b, g in graphs.items()}
    for f in others.values():
        f(texts[:4])
    r_ours, r_hf = [], []
    r_other: dict[str, list] = {b: [] for b in others}
    for _ in range(args.rounds):
        r_ours.append(timed(ours, texts))
        r_hf.append(timed(theirs, texts))
        for b, f in others.items():
            r_other[b].append(timed(f, texts))
    o, h = (statistics.median(x[0] for x in r) for r in (r_ours, r_hf))
    oc, hc = (statistics.median(x[1] for x in r) for r in (r_ours, r_hf))
    row = dict(batch_size=bs, sentences=len(texts), rounds=args.rounds,
               ours_sent_per_s=round(o, 1), pipeline_sent_per_s=round(h, 1), speedup=round(o / h, 2),
               ours_sent_per_cpu_s=round(oc, 1), pipeline_sent_per_cpu_s=round(hc, 1),
               speedup_cpu=round(oc / hc, 2), top1_agreement=agree,
               ours_rounds=[round(x[0], 1) for x in r_ours], pipeline_rounds=[round(x[0], 1) for x in r_hf])
    for b, r in r_other.items():
        w, c = statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)
        row.update({f"{b}_sent_per_s": round(w, 1), f"{b}_sent_per_cpu_s": round(c, 1),
                    f"{b}_speedup": round(w / h, 2), f"{b}_speedup_cpu": round(c / hc, 2),
                    f"{b}_rounds": [round(x[0], 1) for x in r]})
    return row


def bench_size(args: argparse.Namespace, size: str, tok: BertTokenizer, onnx_backends: list[str],
               tmp: str) -> list[dict]:
    from transformers import pipeline  # noqa: PLC0415 - optional dependency (the baseline)
    cfg = preset(size, vocab_size=len(tok))
    d = os.path.join(tmp, size)
    write_hf_dir(build_mlm(cfg, seed=0).state_dict(), cfg, args.vocab_path, d)
    ours_model, _ = load_model(d, "mlm")
    ours_model.eval()
    pipe = pipeline("fill-mask", model=d, device="cpu")
    graphs = {}
    for b in onnx_backends:
        path = os.path.join(tmp, f"{size}-{b}.onnx")
        export_onnx(d, "fill-mask", path, quantize="int8" if b == "int8" else None,
                    eval_limit=50 if args.quick else 500, threads=args.threads)
        graphs[b] = OnnxBackend(path, threads=args.threads)
    rows = []
    for bs in args.batch_sizes:
        row = dict(size=size, preset=cfg.name, **bench_batch(args, bs, tok, ours_model, pipe, graphs))
        rows.append(row)
        print(f"{size:>7} bs={bs:<3} wall: ours {row['ours_sent_per_s']:7.1f}/s pipeline "
              f"{row['pipeline_sent_per_s']:7.1f}/s x{row['speedup']:.2f} | "
              f"cpu: ours {row['ours_sent_per_cpu_s']:7.1f}/s "
              f"pipeline {row['pipeline_sent_per_cpu_s']:7.1f}/s x{row['speedup_cpu']:.2f}"
              + "".join(f" | {b} x{row[f'{b}_speedup']:.2f}" for b in graphs), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    onnx_backends = onnx_backends_available(args.backends)
    import transformers  # noqa: PLC0415 - optional dependency (the baseline)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tok = BertTokenizer(args.vocab_path)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for size in args.sizes for row in bench_size(args, size, tok, onnx_backends, tmp)]
    result = dict(
        benchmark="fill-mask throughput (sentences/s), random weights, google_zh vocab, CPU",
        torch=torch.__version__, transformers=transformers.__version__, threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), load_average=[round(x, 2) for x in os.getloadavg()],
        machine=platform.machine(), python=platform.python_version(),
        when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), rows=rows)
    atomic_write_json(args.output, result)
    extra = [b for b in ("onnx", "int8") if rows and f"{b}_speedup" in rows[0]]
    print("| model | batch | miniroberta sent/s (wall / CPU) | pipeline sent/s (wall / CPU) | ratio (wall / CPU) |"
          + "".join(f" {b} sent/s (ratio) |" for b in extra))
    print("|---|---|---|---|---|" + "---|" * len(extra))
    for r in rows:
        print(f"| {r['size']} ({r['preset']}) | {r['batch_size']} | "
              f"{r['ours_sent_per_s']} / {r['ours_sent_per_cpu_s']} | "
              f"{r['pipeline_sent_per_s']} / {r['pipeline_sent_per_cpu_s']} | {r['speedup']}x / {r['speedup_cpu']}x |"
              + "".join(f" {r[f'{b}_sent_per_s']} ({r[f'{b}_speedup']}x) |" for b in extra))
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
