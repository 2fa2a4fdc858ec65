"""Fair on shared cores: one tiny pretraining run alone vs two side by side, per OpenMP wait policy.

Each run is a real ``miniroberta pretrain`` process (tiny, seq 128, batch 32, bf16 where native) on the
same preprocessed slice of ../shared/data/corpus, for a fixed number of steps. Per policy, measured in
this one process, variants interleaved over ``--repeats`` rounds, medians reported:

* alone -- one run on the idle machine (its threads: every core it may use);
* pair  -- two identical runs started together (each with the same default threads: what two users,
  or a run beside the test suite, get); the pair's time is the later of the two to finish.

Training time is read from each run's own metrics (``elapsed_s`` of its last report), so process start-up
is excluded. Pair efficiency = 2 x t_alone(policy under test... see ``--ref``) / t_pair: 1.0 means the
two runs together finished as much work per second as one run alone on the whole machine; 0.5 means
sharing wasted half of it. Policies: ``runtime`` (OMP_WAIT_POLICY empty: libgomp's default spin-then-sleep),
``PASSIVE`` (waiting threads sleep at once), ``ACTIVE``, ``spin=N`` (``GOMP_SPINCOUNT=N``: spin N times, then sleep).
Writes ``bench/results/threads.json`` with the CPU model and flags.

    python bench/bench_threads.py                  # 3 rounds x (alone, pair) x 3 policies, 300 steps each
    python bench/bench_threads.py --steps 60 --repeats 1 --policies PASSIVE   # a smoke test
    python bench/bench_threads.py --alone_only --repeats 9 --policies runtime spin=1000   # alone speed only
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from miniroberta.engine.device import cpu_info  # noqa: E402
from miniroberta.engine.threads import available_cores  # noqa: E402


def build_data(tmp: str, vocab: str) -> str:
    from miniroberta.data.preprocess import build_dataset
    path = os.path.join(tmp, "ds")
    build_dataset(str(DATA / "corpus" / "cluecorpussmall_sampled.txt"), vocab, path, seq_length=128,
                  max_bytes=1_000_000, overwrite=True, progress=False)
    return path


def start(tmp: str, tag: str, ds: str, vocab: str, steps: int, policy: str) -> tuple[subprocess.Popen, str]:
    out = os.path.join(tmp, tag, "m.bin")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy.startswith("spin="):        # libgomp's default policy with a spin count of N before sleeping
        env.update(OMP_WAIT_POLICY="", GOMP_SPINCOUNT=policy.split("=", 1)[1])
    else:
        env["OMP_WAIT_POLICY"] = "" if policy == "runtime" else policy
    cmd = [sys.executable, "-m", "miniroberta.cli", "pretrain", "--dataset_path", ds, "--vocab_path", vocab,
           "--config_path", "tiny", "--output_model_path", out, "--total_steps", str(steps), "--batch_size", "32",
           "--learning_rate", "1e-3", "--report_steps", str(max(1, steps // 6)), "--save_checkpoint_steps",
           str(10 ** 9), "--no_progress", "--overwrite"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out


def train_seconds(proc: subprocess.Popen, out: str) -> float:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pretrain failed ({proc.returncode}):\n{err[-2000:]}")
    recs = [json.loads(line) for line in open(out + ".metrics.jsonl", encoding="utf-8")]
    return max(r["elapsed_s"] for r in recs if r.get("event") == "report")


def one_round(tmp: str, ds: str, vocab: str, steps: int, policy: str, k: int, alone_only: bool = False) -> dict:
    p, o = start(tmp, f"{policy}-alone-{k}", ds, vocab, steps, policy)
    alone = train_seconds(p, o)
    if alone_only:
        return {"alone_s": alone}
    runs = [start(tmp, f"{policy}-pair{i}-{k}", ds, vocab, steps, policy) for i in range(2)]
    pair = [train_seconds(p, o) for p, o in runs]
    return {"alone_s": alone, "pair_s": max(pair), "pair_each_s": pair}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="training steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--policies", nargs="+", default=["runtime", "PASSIVE", "ACTIVE"])
    ap.add_argument("--alone_only", action="store_true",
                    help="only the runs alone (more rounds for the same time: the alone-speed question)")
    ap.add_argument("--vocab", default=str(DATA / "vocab" / "google_zh_vocab.txt"))
    ap.add_argument("--out", default=None,
                    help="result file (default bench/results/threads.json, or threads_alone.json with --alone_only)")
    args = ap.parse_args()
    if args.out is None:
        args.out = str(ROOT / "bench" / "results" / ("threads_alone.json" if args.alone_only else "threads.json"))
    t0 = time.time()
    res: dict = {"machine": {"cpu": cpu_info(), "cores_available": len(available_cores())}, "steps": args.steps,
                 "repeats": args.repeats, "rounds": {p: [] for p in args.policies}, "summary": {}}
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        ds = build_data(tmp, args.vocab)
        for k in range(args.repeats):
            for pol in args.policies:     # interleaved: every policy once per round
                r = one_round(tmp, ds, args.vocab, args.steps, pol, k, args.alone_only)
                res["rounds"][pol].append(r)
                pair = "" if args.alone_only else (f"   pair {r['pair_s']:6.1f} s "
                                                   f"({r['pair_each_s'][0]:.1f}, {r['pair_each_s'][1]:.1f})")
                print(f"round {k} {pol:<8} alone {r['alone_s']:6.1f} s{pair}", flush=True)
    ref = "runtime" if "runtime" in args.policies else args.policies[0]
    t_ref = statistics.median(r["alone_s"] for r in res["rounds"][ref])
    for pol, rounds in res["rounds"].items():
        a = statistics.median(r["alone_s"] for r in rounds)
        paired = [ref_r["alone_s"] / r["alone_s"] for ref_r, r in zip(res["rounds"][ref], rounds)]
        res["summary"][pol] = {"alone_s": a, "alone_vs_ref": t_ref / a,
                               "alone_vs_ref_paired_median": statistics.median(paired),   # same round, one ratio each
                               "alone_range_s": [min(r["alone_s"] for r in rounds), max(r["alone_s"] for r in rounds)]}
        if not args.alone_only:
            pr = statistics.median(r["pair_s"] for r in rounds)
            res["summary"][pol].update(pair_s=pr, pair_efficiency=2 * a / pr, pair_efficiency_vs_ref_alone=2 * t_ref / pr)
    res["reference_policy"] = ref
    res["wall_s"] = time.time() - t0
    print(f"\n{'policy':<9} {'alone s':>8} {'pair s':>8} {'pair eff.':>10} {'alone speed vs ' + ref:>22}")
    for pol, s in res["summary"].items():
        pair_s = f"{s['pair_s']:>8.1f}" if "pair_s" in s else f"{'-':>8}"
        eff = f"{s['pair_efficiency_vs_ref_alone']:>10.2f}" if "pair_s" in s else f"{'-':>10}"
        print(f"{pol:<9} {s['alone_s']:>8.1f} {pair_s} {eff} {s['alone_vs_ref']:>22.3f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
