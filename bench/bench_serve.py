"""Serving benchmark: ``miniroberta serve`` over HTTP on loopback, latency and throughput.

For each classifier size (random weights exported through our own code unless --classifier_*
gives a fine-tuned one) and each backend -- PyTorch, ONNX fp32, ONNX int8 (``miniroberta serve``
with dynamic batching) and the baseline, ``transformers.pipeline('text-classification')`` behind
the same FastAPI app with batching off (max_batch 1) -- a fresh server process is started on
127.0.0.1 and driven by a closed loop of C concurrent keep-alive connections (C = 1, 8, 32), each
sending one-text /classify requests back to back. Reported per cell: p50/p90/p99 latency (client
side, ms), requests/s, mean micro-batch size (from /metrics), errors; then ratios within the run.
Every cell is bounded by --requests and --seconds; nothing leaves the machine.

    python bench/bench_serve.py                  # tiny + medium, all backends, C = 1, 8, 32 (~15 min)
    python bench/bench_serve.py --quick          # smoke test: tiny, few requests; writes to a temp file
    python bench/bench_serve.py --abuse          # the server's RSS under the abuse mix (docs/serve.md)

Run it on an otherwise idle machine: the client shares the CPU with the server (the client is a
minimal asyncio HTTP/1.1 loop to keep its share small; its CPU seconds are recorded). Writes
``bench/results/serve.json`` (CPU model and flags from /proc/cpuinfo, versions, settings, rows,
ratios, targets) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from miniroberta.infer.backends import Backend, HeadInfo
from miniroberta.infer.onnx_export import export_onnx
from miniroberta.interop.export import write_hf_dir
from miniroberta.modeling.bert import BertForSequenceClassification, build_mlm, init_weights
from miniroberta.modeling.config import preset, replace
from miniroberta.modeling.tokenizer import BertTokenizer, read_vocab
from miniroberta.serve.app import Service, create_app
from miniroberta.serve.config import ServeLimits
from miniroberta.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SIZES = {"tiny": "L2_H128", "medium": "L8_H512"}
BACKENDS = ("torch", "onnx", "int8", "pipeline")


# ----------------------------------------------------------------------------------- machine
def cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("model name") and "model" not in info.get("_seen", ""):
            info["model"] = line.split(":", 1)[1].strip()
            info["_seen"] = "model"
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    info.pop("_seen", None)
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
    info["flags"] = {f: f in flags for f in wanted}
    return info


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "onnxruntime", "onnx", "transformers", "fastapi", "uvicorn", "miniroberta"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = "missing"
    return out


# ------------------------------------------------------------------------------------ models
def texts_for_bench(n: int, max_chars: int) -> list[str]:
    """chnsenticorp dev reviews (cut at max_chars), or synthetic Chinese when the data is absent."""
    rng = random.Random(0)
    p = DATA / "tasks" / "chnsenticorp" / "dev.tsv"
    lines = []
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[-1].strip():
                lines.append(parts[-1].strip()[:max_chars])
    if not lines:
        lines = ["".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(max_chars)) for _ in range(n)]
    rng.shuffle(lines)
    return (lines * (n // len(lines) + 1))[:n]


def random_classifier(out: Path, preset_name: str, vocab: str) -> Path:
    """A random-init BertForSequenceClassification in fine-tune layout (2 labels, seq 128, chnsenticorp)."""
    torch.manual_seed(0)
    cfg = replace(preset(preset_name, vocab_size=len(read_vocab(vocab))), id2label={0: "0", 1: "1"})
    m = BertForSequenceClassification(cfg)
    init_weights(m)
    ft = {"task": "chnsenticorp", "labels": ["0", "1"], "seq_length": 128, "truncation": "longest_first",
          "text_fields": ["text_a"], "label_field": "label", "note": "random weights (speed only)"}
    write_hf_dir(m.state_dict(), cfg, vocab, str(out), architecture="BertForSequenceClassification",
                 extra_files={"finetune.json": json.dumps(ft)})
    return out


# ------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(backend: str, model: Path, graphs: dict[str, Path], args: argparse.Namespace,
                 log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    common = ["--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads)]
    if backend == "pipeline":
        cmd = [sys.executable, __file__, "--pipeline_worker", "--model", str(model), *common]
    else:
        src = ["--model", str(model), "--tasks", "classify"] if backend == "torch" else ["--onnx", str(graphs[backend])]
        cmd = [sys.executable, "-m", "miniroberta.cli", "serve", *src, *common, "--max_batch", str(args.max_batch),
               "--max_wait_ms", str(args.max_wait_ms), "--max_items", "64"]
    f = open(log, "ab")
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    f.close()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{backend} server exited ({proc.returncode}); see {log}")
        try:
            if http_get(port, "/healthz")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"{backend} server did not start in 300 s; see {log}")


def stop_server(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def http_get(port: int, path: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def batch_stats(port: int) -> tuple[float, float]:
    """(sum, count) of the server's miniroberta_batch_size histogram for classify (0, 0 if none)."""
    s = c = 0.0
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith('miniroberta_batch_size_sum{endpoint="classify"}'):
            s = float(line.split()[-1])
        elif line.startswith('miniroberta_batch_size_count{endpoint="classify"}'):
            c = float(line.split()[-1])
    return s, c


# ------------------------------------------------------------------------------------ client
def _request(text: str) -> bytes:
    body = json.dumps({"text": text}, ensure_ascii=False).encode()
    return (b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def load(port: int, texts: list[str], concurrency: int, n: int, seconds: float) -> dict[str, Any]:
    """C closed-loop workers on keep-alive connections until n requests or the time cap."""
    reqs = [_request(t) for t in texts]
    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while counter < n and time.perf_counter() < deadline:
                req = reqs[counter % len(reqs)]
                counter += 1
                t0 = time.perf_counter()
                status = await _one(reader, writer, req)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lat = sorted(latencies)

    def q(p: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]
    return dict(requests=len(lat), errors=errors, seconds=round(wall, 3), rps=round(len(lat) / wall, 1),
                p50_ms=round(q(0.50), 3), p90_ms=round(q(0.90), 3), p99_ms=round(q(0.99), 3),
                mean_ms=round(1000 * statistics.fmean(lat), 3), client_cpu_s=round(cpu, 3))


# -------------------------------------------------------------------------- pipeline worker
def pipeline_worker(args: argparse.Namespace) -> int:
    """The baseline server: transformers' pipeline, one text per call, in our FastAPI app."""
    import uvicorn  # noqa: PLC0415 - optional dependencies, only in the baseline's process
    from transformers import pipeline  # noqa: PLC0415
    from transformers.utils import logging as tlog  # noqa: PLC0415
    tlog.set_verbosity_error()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pipe = pipeline("text-classification", model=args.model, device="cpu")
    cfg = pipe.model.config

    class PipelineBackend(Backend):
        name = "transformers-pipeline"

    be = PipelineBackend(HeadInfo("classify", cfg.max_position_embeddings, cfg.vocab_size, cfg.hidden_size,
                                  [cfg.id2label[i] for i in range(cfg.num_labels)]))

    def run(key: Any, items: list[Any]) -> list[Any]:
        return [pipe(it if isinstance(it, str) else {"text": it[0], "text_pair": it[1]},
                     truncation=True, max_length=128) for it in items]

    tok = BertTokenizer(os.path.join(args.model, "vocab.txt"))
    app = create_app({"classify": Service("classify", be, tok, source=args.model, run=run)},
                     ServeLimits(max_batch=1, max_wait_ms=0, max_chars=100000, max_items=64))
    signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises SIGTERM after draining: exit 0 instead
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


# -------------------------------------------------------------------------------------- main
TARGETS = {
    "tiny_c1_p50_ms": 5.0, "tiny_c32_rps_vs_pipeline": 5.0, "medium_c32_rps_vs_pipeline": 3.0,
    "medium_int8_vs_fp32_rps": 1.5, "int8_accuracy_drop_points": 1.0,
}


def ratios(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    by = {(r["size"], r["backend"], r["concurrency"]): r for r in rows}
    out: dict[str, Any] = {}
    for (size, backend, c), r in by.items():
        base = by.get((size, "pipeline", c))
        if backend != "pipeline" and base and base["rps"]:
            out[f"{size}_{backend}_c{c}_rps_vs_pipeline"] = round(r["rps"] / base["rps"], 2)
        fp32 = by.get((size, "onnx", c))
        if backend == "int8" and fp32 and fp32["rps"]:
            out[f"{size}_int8_vs_fp32_c{c}_rps"] = round(r["rps"] / fp32["rps"], 2)
    best = {}
    for size in {r["size"] for r in rows}:
        cands = [r for r in rows if r["size"] == size and r["backend"] != "pipeline"]
        c1 = [r for r in cands if r["concurrency"] == 1]
        if c1:
            best[f"{size}_c1_best_p50_ms"] = min(r["p50_ms"] for r in c1)
        c32 = [r for r in cands if r["concurrency"] == 32]
        base = by.get((size, "pipeline", 32))
        if c32 and base:
            best[f"{size}_c32_best_rps_vs_pipeline"] = round(max(r["rps"] for r in c32) / base["rps"], 2)
        q = (meta.get(size) or {}).get("int8") or {}
        if "delta_points" in q:
            best[f"{size}_int8_accuracy_delta_points"] = round(q["delta_points"], 2)
    out["best"] = best
    return out


# ---------------------------------------------------------------------------------- abuse mix
def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def random_mlm(out: Path, preset_name: str, vocab: str) -> Path:
    cfg = preset(preset_name, vocab_size=len(read_vocab(vocab)))
    write_hf_dir(build_mlm(cfg, seed=0).state_dict(), cfg, vocab, str(out))
    return out


def _post(path: str, body: bytes, close: bool = False) -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (path.encode(), len(body), b"Connection: close\r\n" if close else b"")) + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server closes the connection) of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, length, close = int(head.split(b" ", 2)[1]), 0, False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif line.startswith(b"connection:") and b"close" in line:
            close = True
    await reader.readexactly(length)
    return status, close


def abuse_requests(rng: random.Random) -> dict[str, list[tuple[str, bytes]]]:
    """The largest valid requests (good) and the refused kinds (bad)."""
    def cjk(n: int) -> str:
        return "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(n))
    good = [("/classify", json.dumps({"text": cjk(60)}).encode()),
            ("/embed", json.dumps({"texts": [cjk(2000) for _ in range(64)]}).encode()),
            ("/fill-mask", json.dumps({"texts": [cjk(200) + "[MASK]" + cjk(200) for _ in range(64)],
                                       "top_k": 32}).encode()),
            ("/classify", json.dumps({"texts": [[cjk(1000), cjk(1000)] for _ in range(64)]}).encode())]
    bad = [("/classify", b'{"text": "\\ud800"}'), ("/embed", b'{"texts": ["a", '),
           ("/fill-mask", json.dumps({"texts": ["\u4e2d\u56fd" + "[MASK]" * 100] * 4, "top_k": 1000}).encode()),
           ("/fill-mask", json.dumps({"texts": ["\u4e2d\u56fd" + "[MASK]" * 100] * 16, "top_k": 100}).encode()),
           ("/classify", b"[" * 400_000 + b"]" * 400_000), ("/embed", json.dumps({"texts": ["a"] * 65}).encode()),
           ("/classify", json.dumps({"text": cjk(2001)}).encode()), ("/nope", b"{}")]
    return {"good": good, "bad": bad}


async def _client(port: int, reqs: list[tuple[str, bytes]], stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Sends ``reqs`` in turn on a keep-alive connection (a new one when the server closes it)."""
    i, conn = 0, None
    while not stop.is_set():
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            path, body = reqs[i % len(reqs)]
            i += 1
            conn[1].write(_post(path, body))
            status, close = await _response(conn[0])
            counts[str(status)] = counts.get(str(status), 0) + 1
            if close:
                conn[1].close()
                conn = None
        except (OSError, asyncio.IncompleteReadError):
            counts["reset"] = counts.get("reset", 0) + 1
            conn = None
            await asyncio.sleep(0.05)


async def _chunked_bomb(port: int, stop: asyncio.Event, counts: dict[str, int], mb: int = 50) -> None:
    """Chunked bodies of up to ``mb`` MB, again and again: answered 413 at the limit, the rest unread."""
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"9" * (1 << 20))
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(mb):
                writer.write(chunk)
                await writer.drain()
            status, _ = await _response(reader)
            counts[str(status)] = counts.get(str(status), 0) + 1
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            counts["reset"] = counts.get("reset", 0) + 1
            await asyncio.sleep(0.05)


async def _slowloris(port: int, stop: asyncio.Event, counts: dict[str, int], n: int) -> None:
    """``n`` connections each sending one header byte a second (held up to --read_timeout_s, then reopened)."""
    async def one() -> None:
        while not stop.is_set():
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                counts["opened"] = counts.get("opened", 0) + 1
                for b in b"POST /classify HTTP/1.1\r\nHost: x\r\nX-" + b"a" * 10_000:
                    if stop.is_set():
                        break
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(1.0)
                writer.close()
            except OSError:
                counts["closed_by_server"] = counts.get("closed_by_server", 0) + 1
                await asyncio.sleep(0.2)
    await asyncio.gather(*(one() for _ in range(n)))


async def _flood(port: int, stop: asyncio.Event, counts: dict[str, int], n: int = 300) -> None:
    """Every 2 s, ``n`` one-text requests at once on new connections: beyond --max_in_flight they get 503."""
    body = json.dumps({"texts": ["\u597d" * 500] * 8}).encode()

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_post("/classify", body, close=True))
            status, _ = await _response(reader)
            counts[str(status)] = counts.get(str(status), 0) + 1
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            counts["reset"] = counts.get("reset", 0) + 1
    while not stop.is_set():
        await asyncio.gather(*(one() for _ in range(n)))
        await asyncio.sleep(2.0)


async def abuse_mix(port: int, seconds: float, pid: int) -> dict[str, Any]:
    reqs = abuse_requests(random.Random(0))
    kinds = ("good", "bad", "chunked_50MB", "slowloris", "flood")
    counts: dict[str, dict[str, int]] = {k: {} for k in kinds}
    peak, series, stop = [0], [], asyncio.Event()
    t0 = time.monotonic()

    async def sample() -> None:
        while not stop.is_set():
            rss = rss_kb(pid)
            peak[0] = max(peak[0], rss)
            if not series or time.monotonic() - t0 >= 5 * len(series):
                series.append(round(rss / 1024, 1))
            await asyncio.sleep(0.1)
    tasks = [asyncio.ensure_future(c) for c in (
        *(_client(port, reqs["good"], stop, counts["good"]) for _ in range(8)),
        *(_client(port, reqs["bad"], stop, counts["bad"]) for _ in range(4)),
        *(_chunked_bomb(port, stop, counts["chunked_50MB"]) for _ in range(2)),
        _slowloris(port, stop, counts["slowloris"], 300), _flood(port, stop, counts["flood"]), sample())]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    for t in tasks:
        t.cancel()
    return {"statuses": counts, "peak_rss_sampled_kb": peak[0], "rss_mb_every_5s": series}


def abuse(args: argparse.Namespace) -> int:
    """The server (tiny MLM for fill-mask/embed, tiny int8 classifier; default limits) under the abuse mix:
    its RSS idle, at peak and after."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-abuse.") as tmp:
        tmpd = Path(tmp)
        mlm = random_mlm(tmpd / "mlm", SIZES["tiny"], args.vocab_path)
        cls = random_classifier(tmpd / "cls", SIZES["tiny"], args.vocab_path)
        export_onnx(str(cls), "classify", str(tmpd / "int8.onnx"), quantize="int8", eval_limit=50)
        port = free_port()
        cmd = [sys.executable, "-m", "miniroberta.cli", "serve", "--model", str(mlm), "--onnx", str(tmpd / "int8.onnx"),
               "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads)]
        with open(tmpd / "server.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if http_get(port, "/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            asyncio.run(load(port, texts_for_bench(64, 64), 4, 50, 30))
            idle = rss_kb(proc.pid)
            mix = asyncio.run(abuse_mix(port, args.seconds, proc.pid))
            time.sleep(3)
            after, hwm = rss_kb(proc.pid), rss_kb(proc.pid, "VmHWM")
            alive = http_get(port, "/healthz")[0] == 200
        finally:
            rc = stop_server(proc)
        server_500s = (tmpd / "server.log").read_text(errors="replace").count("internal error")
    result = dict(benchmark="miniroberta serve RSS under the abuse mix (default limits)", cpu=cpu_info(),
                  versions=versions(), load_average=[round(x, 2) for x in os.getloadavg()],
                  when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), seconds=args.seconds,
                  limits=ServeLimits().as_dict(), idle_rss_mb=round(idle / 1024, 1),
                  peak_rss_mb=round(max(hwm, mix["peak_rss_sampled_kb"]) / 1024, 1),
                  after_rss_mb=round(after / 1024, 1), alive_after=alive, exit_code=rc,
                  internal_errors_logged=server_500s, statuses=mix["statuses"],
                  rss_mb_every_5s=mix["rss_mb_every_5s"])
    atomic_write_json(args.output, result)
    print(json.dumps(result, indent=1))
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=2000, help="requests per cell (at most)")
    p.add_argument("--seconds", type=float, default=30.0, help="time cap per cell (--abuse: the mix's duration)")
    p.add_argument("--warmup", type=int, default=50, help="requests before each server's first cell")
    p.add_argument("--threads", type=int, default=0, help="server intra-op threads (0: library default)")
    p.add_argument("--max_batch", type=int, default=32)
    p.add_argument("--max_wait_ms", type=float, default=2.0)
    p.add_argument("--max_text_chars", type=int, default=64, help="request texts: chnsenticorp dev reviews cut here")
    p.add_argument("--eval_limit", type=int, default=1200, help="int8 accuracy: chnsenticorp dev examples")
    p.add_argument("--classifier_tiny", default=None, help="a fine-tuned tiny classifier instead of random weights")
    p.add_argument("--classifier_medium", default=None, help="a fine-tuned medium classifier instead of random weights")
    p.add_argument("--vocab_path", default=str(DATA / "vocab" / "google_zh_vocab.txt"))
    p.add_argument("--output", default=None, help="default bench/results/serve.json, serve_abuse.json with --abuse "
                                                  "(--quick: a temp file)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny, C = 1 and 8, 40 requests a cell "
                                                        "(--abuse: a 5 s mix)")
    p.add_argument("--abuse", action="store_true", help="instead: the server's memory (RSS) under the abuse mix "
                                                        "of docs/serve.md, default limits, for --seconds")
    # internal: the baseline server process
    p.add_argument("--pipeline_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.concurrency, args.requests, args.seconds = ["tiny"], [1, 8], 40, (5.0 if args.abuse else 10.0)
        args.warmup, args.eval_limit = 5, 50
    name = "serve_abuse" if args.abuse else "serve"
    args.output = args.output or (os.path.join(tempfile.gettempdir(), f"{name}.quick.json") if args.quick
                                  else str(ROOT / "bench" / "results" / f"{name}.json"))
    return args


def export_graphs(args: argparse.Namespace, size: str, model: Path, tmpd: Path,
                  meta: dict[str, Any]) -> dict[str, Path]:
    graphs: dict[str, Path] = {}
    if {"onnx", "int8"} & set(args.backends):
        for b in ("onnx", "int8"):
            path = tmpd / size / f"{b}.onnx"
            m = export_onnx(str(model), "classify", str(path), quantize="int8" if b == "int8" else None,
                            eval_limit=args.eval_limit)
            graphs[b] = path
            if b == "int8":
                meta[size]["int8"] = m["quantization"]
            print(f"exported {size} {b}: {m['bytes'] / 1e6:.1f} MB", file=sys.stderr)
    return graphs


def run_cells(args: argparse.Namespace, size: str, backend: str, model: Path, graphs: dict[str, Path],
              texts: list[str], tmpd: Path) -> list[dict[str, Any]]:
    """A fresh server for ``backend``, warmed up, then one row per concurrency."""
    rows = []
    proc, port = start_server(backend, model, graphs, args, tmpd / f"{size}-{backend}.log")
    try:
        asyncio.run(load(port, texts, min(8, max(args.concurrency)), args.warmup, 60))
        for c in args.concurrency:
            s0, n0 = batch_stats(port)
            r = asyncio.run(load(port, texts, c, args.requests, args.seconds))
            s1, n1 = batch_stats(port)
            r.update(size=size, preset=SIZES[size], backend=backend, concurrency=c,
                     mean_batch=round((s1 - s0) / (n1 - n0), 2) if n1 > n0 else None)
            rows.append(r)
            print(f"{size:>6} {backend:>8} c={c:<3} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                  f"{r['rps']:8.1f} req/s  batch {r['mean_batch']}  errors {r['errors']}", file=sys.stderr)
    finally:
        rc = stop_server(proc)
        if rc != 0:
            print(f"warning: {backend} server exited {rc} on SIGTERM", file=sys.stderr)
    return rows


def report(args: argparse.Namespace, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    result = dict(
        benchmark="miniroberta serve /classify over loopback HTTP: closed loop, one text per request",
        cpu=cpu_info(), versions=versions(), load_average=[round(x, 2) for x in os.getloadavg()],
        when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), quick=args.quick,
        settings=dict(requests=args.requests, seconds=args.seconds, threads=args.threads, max_batch=args.max_batch,
                      max_wait_ms=args.max_wait_ms, max_text_chars=args.max_text_chars,
                      baseline="transformers.pipeline('text-classification') in the same FastAPI app, max_batch 1"),
        models=meta, rows=rows, ratios=ratios(rows, meta), targets=TARGETS)
    atomic_write_json(args.output, result)
    print("| size | backend | C | p50 ms | p99 ms | req/s | mean batch | vs pipeline |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = result["ratios"].get(f"{r['size']}_{r['backend']}_c{r['concurrency']}_rps_vs_pipeline", "")
        print(f"| {r['size']} | {r['backend']} | {r['concurrency']} | {r['p50_ms']} | {r['p99_ms']} | {r['rps']} | "
              f"{r['mean_batch']} | {f'{vs}x' if vs else ''} |")
    print(json.dumps(result["ratios"]["best"], indent=1))
    print(f"\nwrote {args.output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pipeline_worker:
        return pipeline_worker(args)
    if args.abuse:
        return abuse(args)
    texts = texts_for_bench(512, args.max_text_chars)
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve.") as tmp:
        tmpd = Path(tmp)
        for size in args.sizes:
            given = getattr(args, f"classifier_{size}")
            model = Path(given) if given else random_classifier(tmpd / size / "model", SIZES[size], args.vocab_path)
            meta[size] = {"preset": SIZES[size], "model": str(model) if given else "random init",
                          "fine_tuned": bool(given)}
            graphs = export_graphs(args, size, model, tmpd, meta)
            for backend in args.backends:
                rows += run_cells(args, size, backend, model, graphs, texts, tmpd)
    report(args, rows, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
