"""``miniroberta serve``: the models over HTTP (FastAPI + uvicorn) with dynamic micro-batching.

Endpoints (JSON in, JSON out; see docs/serve.md for examples):

    POST /fill-mask  {"text": "...[MASK]..."} or {"texts": [...]}, "top_k": 5
    POST /embed      {"text": ...} or {"texts": [...]}, "pooling": "cls" | "mean"
    POST /classify   {"text": ..., "text_pair": ...} or {"texts": ["a", ["a", "b"], ...]}
    GET  /healthz    the models served and the batching settings
    GET  /metrics    Prometheus text format: requests, latency, batch sizes, in-flight requests

Every model endpoint calls the function its CLI command calls (``fill_mask``, ``embed``,
``classify`` in ``infer/pipelines.py``) on a backend chosen at start-up: an ``--onnx`` export of
that head (onnxruntime) when given, else the PyTorch model of ``--model``. Items of concurrent
requests are batched by ``serve/batcher.py``; all model calls run in one worker thread.

Errors are JSON ``{"error": ...}``: 413 when a request exceeds ``--max_items``/``--max_chars``
(``"limit"`` names which), 422 for a malformed body (``"field"`` names it), 400 for input the
model cannot take (no [MASK], too long), 404 for a head this server does not serve, 500 for an
internal error -- which fails that request only. SIGTERM stops accepting connections, lets the
requests in flight finish, then exits 0.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Literal, Sequence, Union

from miniroberta.infer.backends import TASKS, Backend
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.utils import log

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as e:  # pragma: no cover - depends on the install
    raise RuntimeError('miniroberta serve needs the serve extra: pip install -e ".[serve]"') from e

FAULT_ENV = "MINIROBERTA_SERVE_FAULT"   # test hook: a text that makes its batch raise (internal-error path)


# ------------------------------------------------------------------------------ requests
class _Texts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    texts: list[str] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "_Texts":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list of strings)")
        if self.texts is not None and not self.texts:
            raise ValueError("'texts' is empty")
        return self

    def items(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class FillMaskRequest(_Texts):
    top_k: int = Field(5, ge=1, le=1000)


class EmbedRequest(_Texts):
    pooling: Literal["cls", "mean"] = "cls"


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    text_pair: str | None = None
    texts: list[Union[str, list[str]]] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "ClassifyRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (with optional 'text_pair') or 'texts' "
                             "(a list of strings or [text, text_pair] lists)")
        if self.texts is not None:
            if self.text_pair is not None:
                raise ValueError("'text_pair' goes with 'text'; in 'texts' write pairs as [text, text_pair]")
            if not self.texts:
                raise ValueError("'texts' is empty")
            for i, t in enumerate(self.texts):
                if isinstance(t, list) and len(t) != 2:
                    raise ValueError(f"texts[{i}] has {len(t)} strings; a pair is [text, text_pair]")
        return self

    def items(self) -> list[str | tuple[str, str]]:
        if self.text is not None:
            return [self.text if self.text_pair is None else (self.text, self.text_pair)]
        return [t if isinstance(t, str) else (t[0], t[1]) for t in self.texts or []]


# ------------------------------------------------------------------------------ settings
@dataclass
class ServeOptions:
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_chars: int = 2000
    max_items: int = 64
    seq_length: int = 128          # embed: texts are cut at this many tokens (as `miniroberta embed`)


class LimitError(Exception):
    def __init__(self, limit: str, value: int, message: str) -> None:
        super().__init__(message)
        self.limit, self.value = limit, value


@dataclass
class Service:
    """One served head: its backend, tokenizer and batcher."""

    task: str
    backend: Backend
    tokenizer: BertTokenizer
    batcher: Any = None
    source: str = ""
    run: Any = None        # a batch function replacing the pipeline call (the bench's baseline uses it)


@dataclass
class Metrics:
    """Prometheus metrics in a registry of this app (so tests can build several apps)."""

    registry: Any = None
    requests: Any = None
    latency: Any = None
    batch_size: Any = None
    batch_seconds: Any = None
    in_flight: Any = None
    items: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls) -> "Metrics":
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
        disable_created_metrics()  # no *_created series: they double the output and nobody scrapes them here
        reg = CollectorRegistry()
        lat_buckets = (.0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05, .075, .1, .25, .5, 1, 2.5, 5, 10)
        return cls(
            registry=reg,
            requests=Counter("miniroberta_requests", "HTTP requests by endpoint and status code",
                             ["endpoint", "status"], registry=reg),
            latency=Histogram("miniroberta_request_duration_seconds", "request latency in the server",
                              ["endpoint"], buckets=lat_buckets, registry=reg),
            batch_size=Histogram("miniroberta_batch_size", "items per model call (micro-batch size)",
                                 ["endpoint"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=reg),
            batch_seconds=Histogram("miniroberta_batch_duration_seconds", "seconds per model call",
                                    ["endpoint"], buckets=lat_buckets, registry=reg),
            in_flight=Gauge("miniroberta_requests_in_flight", "model requests being handled", ["endpoint"],
                            registry=reg),
            items=Counter("miniroberta_items", "texts processed", ["endpoint"], registry=reg))

    def on_batch(self, endpoint: str, size: int, seconds: float) -> None:
        self.batch_size.labels(endpoint).observe(size)
        self.batch_seconds.labels(endpoint).observe(seconds)
        self.items.labels(endpoint).inc(size)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj, ensure_ascii=False), status_code=status, media_type="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


# ------------------------------------------------------------------------------- running
def _run_fn(service: Service, opts: ServeOptions):
    """The batch function of one head: the same pipeline call as its CLI command."""
    from miniroberta.infer.pipelines import classify, embed, fill_mask
    fault = os.environ.get(FAULT_ENV)
    be, tok = service.backend, service.tokenizer

    def run(key: Hashable, items: list[Any]) -> Sequence[Any]:
        if fault and any((it if isinstance(it, str) else it[0]) == fault for it in items):
            raise RuntimeError(f"injected fault ({FAULT_ENV})")
        if service.task == "fill-mask":
            return fill_mask(be, tok, items, top_k=int(key), batch_size=opts.max_batch)
        if service.task == "embed":
            return embed(be, tok, items, pooling=str(key), seq_length=opts.seq_length,
                         batch_size=opts.max_batch).tolist()
        return classify(be, tok, items, batch_size=opts.max_batch)
    return run


def _check_limits(items: Sequence[Any], opts: ServeOptions) -> None:
    if len(items) > opts.max_items:
        raise LimitError("max_items", opts.max_items,
                         f"{len(items)} texts in one request; the limit is --max_items {opts.max_items}")
    for i, it in enumerate(items):
        n = len(it) if isinstance(it, str) else sum(len(t) for t in it)
        if n > opts.max_chars:
            raise LimitError("max_chars", opts.max_chars,
                             f"text {i + 1} has {n} characters; the limit is --max_chars {opts.max_chars}")


def create_app(services: dict[str, Service], opts: ServeOptions) -> "MetricsMiddleware":
    """The ASGI app serving ``services`` (task -> Service) with micro-batching: the FastAPI app
    wrapped in ``MetricsMiddleware`` (the FastAPI object is its ``.app``)."""
    from miniroberta.serve.batcher import MicroBatcher
    metrics = Metrics.create()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for s in services.values():
            s.batcher = MicroBatcher(s.task, s.run or _run_fn(s, opts), executor, opts.max_batch, opts.max_wait_ms,
                                     metrics.on_batch)
            s.batcher.start()
        yield
        for s in services.values():
            await s.batcher.stop()
        executor.shutdown(wait=True)

    app = FastAPI(title="miniroberta", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services, app.state.metrics, app.state.opts = services, metrics, opts

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        fieldname = loc[0] if loc else "body"
        msg = str(first.get("msg", "malformed request"))
        return _error(422, f"malformed request: {'.'.join(loc) or 'body'}: {msg}", field=fieldname,
                      detail=[{"loc": list(map(str, e.get("loc", ()))), "msg": str(e.get("msg", ""))} for e in errs])

    async def serve(task: str, items: list[Any], key_of) -> Response | list[Any]:
        s = services.get(task)
        if s is None:
            return _error(404, f"this server has no {task} model; start it with a --model that has a {task} head "
                               f"or --onnx with a `--task {task}` export", served=sorted(services))
        try:
            _check_limits(items, opts)
            if task == "fill-mask":
                from miniroberta.infer.pipelines import encode_fill_mask
                encode_fill_mask(s.tokenizer, items, s.backend.info.max_length)
            return await s.batcher.submit([(key_of(it), it) for it in items])
        except LimitError as e:
            return _error(413, str(e), limit=e.limit, value=e.value)
        except ValueError as e:
            return _error(400, str(e))
        except Exception as e:  # noqa: BLE001 - one failed request, never the server
            log(f"serve: {task}: internal error: {type(e).__name__}: {e}")
            return _error(500, f"internal error: {type(e).__name__}: {e}")

    @app.post("/fill-mask")
    async def fill_mask_ep(req: FillMaskRequest) -> Response:
        out = await serve("fill-mask", req.items(), lambda _: req.top_k)
        return out if isinstance(out, Response) else _json({"results": out})

    @app.post("/embed")
    async def embed_ep(req: EmbedRequest) -> Response:
        out = await serve("embed", req.items(), lambda _: req.pooling)
        if isinstance(out, Response):
            return out
        return _json({"pooling": req.pooling, "dim": len(out[0]) if out else 0, "embeddings": out})

    @app.post("/classify")
    async def classify_ep(req: ClassifyRequest) -> Response:
        out = await serve("classify", req.items(), lambda it: "single" if isinstance(it, str) else "pair")
        return out if isinstance(out, Response) else _json({"results": out})

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok", "uptime_s": round(time.time() - started, 3),
                      "models": {t: dict(s.backend.describe(), source=s.source) for t, s in services.items()},
                      "batching": {"max_batch": opts.max_batch, "max_wait_ms": opts.max_wait_ms},
                      "limits": {"max_items": opts.max_items, "max_chars": opts.max_chars}})

    @app.get("/metrics")
    async def metrics_ep() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return MetricsMiddleware(app, services, metrics, max_body_bytes(opts))


def max_body_bytes(opts: ServeOptions) -> int:
    """The largest request body worth parsing: every text at ``--max_chars`` as ``\\uXXXX`` escapes,
    plus room for the JSON around them. A larger declared Content-Length gets 413 unread."""
    return opts.max_items * (opts.max_chars * 6 + 64) + 65536


class MetricsMiddleware:
    """ASGI wrapper counting every request (status, latency) and the model requests in flight;
    refuses bodies declared larger than ``max_body`` before they are read."""

    KNOWN = {"/fill-mask", "/embed", "/classify", "/healthz", "/metrics"}

    def __init__(self, app: FastAPI, services: dict[str, Service], metrics: Metrics, max_body: int = 0) -> None:
        self.app, self.services, self.metrics, self.max_body = app, services, metrics, max_body
        self.state = app.state

    def _declared_length(self, scope: dict) -> int:
        for k, v in scope.get("headers") or ():
            if k == b"content-length":
                try:
                    return int(v)
                except ValueError:
                    return 0
        return 0

    async def _too_large(self, send: Any, n: int) -> None:
        body = json.dumps({"error": f"request body of {n} bytes is larger than this server accepts "
                                    f"({self.max_body}, from --max_items and --max_chars)",
                           "limit": "max_body_bytes", "value": self.max_body}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in self.KNOWN else "other"
        service = self.services.get(path.lstrip("/"))
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        t0 = time.perf_counter()
        model_call = service is not None and service.batcher is not None
        if model_call:
            service.batcher.inflight += 1
            self.metrics.in_flight.labels(endpoint).inc()
        try:
            n = self._declared_length(scope)
            if self.max_body and n > self.max_body:
                await self._too_large(send_status, n)
            else:
                await self.app(scope, receive, send_status)
        finally:
            if model_call:
                service.batcher.inflight -= 1
                self.metrics.in_flight.labels(endpoint).dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


# ------------------------------------------------------------------------------ start-up
def heads_of(model: str) -> list[str]:
    """The tasks a checkpoint can serve: embed always, fill-mask with an MLM head, classify with a classifier."""
    from miniroberta.interop.checkpoint import find_model_dir
    from miniroberta.interop.checkpoint import load_weights
    _, sd, _ = load_weights(find_model_dir(model))
    tasks = ["embed"]
    if any(k.startswith("cls.predictions.") for k in sd):
        tasks.insert(0, "fill-mask")
    if "classifier.weight" in sd:
        tasks.append("classify")
    return tasks


def build_services(model: str | None, onnx: Sequence[str] = (), vocab_path: str | None = None,
                   threads: int = 0, tasks: Sequence[str] | None = None) -> dict[str, Service]:
    """task -> Service: each ``--onnx`` graph for its head, ``--model`` (PyTorch) for the others."""
    from miniroberta.interop.checkpoint import find_model_dir
    from miniroberta.infer.backends import read_onnx_meta
    from miniroberta.infer.pipelines import load_backend
    services: dict[str, Service] = {}
    for path in onnx:
        task = read_onnx_meta(path)["task"]
        if task in services:
            raise ValueError(f"two --onnx graphs for {task}: {services[task].source} and {path}")
        be, tok = load_backend(task, onnx=path, vocab_path=vocab_path, threads=threads)
        services[task] = Service(task, be, tok, source=os.path.abspath(path))
    if model:
        mdir = find_model_dir(model)
        for task in heads_of(mdir):
            if task not in services and (tasks is None or task in tasks):
                be, tok = load_backend(task, model=mdir, vocab_path=vocab_path, threads=threads)
                services[task] = Service(task, be, tok, source=os.path.abspath(mdir))
    if tasks is not None:
        missing = [t for t in tasks if t not in services]
        if missing:
            raise ValueError(f"--tasks {','.join(missing)}: not available from --model/--onnx "
                             f"(serving {', '.join(services) or 'nothing'})")
        services = {t: s for t, s in services.items() if t in tasks}
    if not services:
        raise ValueError("nothing to serve: pass --model DIR and/or --onnx FILE")
    return services


def warm_up(services: dict[str, Service], opts: ServeOptions) -> None:
    """One call per head so the first request does not pay for lazy initialisation."""
    for s in services.values():
        run = _run_fn(s, opts)
        key = {"fill-mask": 5, "embed": "cls", "classify": "single"}[s.task]
        run(key, ["[MASK]" if s.task == "fill-mask" else "你好"])


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="HF/native checkpoint or fine-tune --output_dir (PyTorch); serves the heads it has")
    p.add_argument("--onnx", action="append", default=[],
                   help="an export-onnx graph (fp32 or int8) served with onnxruntime instead of PyTorch for "
                        "its head; repeat for several heads")
    p.add_argument("--tasks", default=None, help="comma-separated subset of fill-mask,embed,classify to serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max_batch", type=int, default=32, help="most items in one model call")
    p.add_argument("--max_wait_ms", type=float, default=2.0,
                   help="longest an item waits for others to join its batch (0: only what is already queued)")
    p.add_argument("--max_chars", type=int, default=2000, help="most characters per text (pair: both) -> 413")
    p.add_argument("--max_items", type=int, default=64, help="most texts per request -> 413")
    p.add_argument("--seq_length", type=int, default=128, help="embed: tokens per text, as `miniroberta embed`")
    p.add_argument("--vocab_path", default=None)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of the model (0: library default)")
    p.add_argument("--access_log", action="store_true", help="log every request (uvicorn access log)")
    p.add_argument("--log_level", default="warning", choices=("critical", "error", "warning", "info", "debug"))


def run(args: argparse.Namespace) -> int:
    import uvicorn
    for name in ("max_batch", "max_items", "max_chars", "seq_length"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        raise ValueError(f"--max_wait_ms must be >= 0, got {args.max_wait_ms}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if tasks and set(tasks) - set(TASKS):
        raise ValueError(f"--tasks: unknown {sorted(set(tasks) - set(TASKS))}; choose from {TASKS}")
    opts = ServeOptions(args.max_batch, args.max_wait_ms, args.max_chars, args.max_items, args.seq_length)
    services = build_services(args.model, args.onnx, args.vocab_path, args.threads, tasks)
    warm_up(services, opts)
    app = create_app(services, opts)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            access_log=args.access_log, lifespan="on", timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal for the previous
    # handler; this one makes that a clean exit 0 instead of death by signal.
    terminated: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    desc = ", ".join(f"{t} ({s.backend.name})" for t, s in services.items())
    log(f"serve: http://{args.host}:{args.port} -- {desc}; max_batch {opts.max_batch}, "
        f"max_wait_ms {opts.max_wait_ms}")
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        log("serve: SIGTERM -- in-flight requests finished, exiting")
    return 0 if server.started or terminated else 1


__all__ = ["create_app", "build_services", "ServeOptions", "Service", "configure", "run", "heads_of"]
