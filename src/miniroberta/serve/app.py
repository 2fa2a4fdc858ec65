"""``miniroberta serve``: the models over HTTP (FastAPI + uvicorn) with dynamic micro-batching.

Endpoints (JSON in, JSON out; see docs/serve.md for examples):

    POST /fill-mask  {"text": "...[MASK]..."} or {"texts": [...]}, "top_k": 5
    POST /embed      {"text": ...} or {"texts": [...]}, "pooling": "cls" | "mean"
    POST /classify   {"text": ..., "text_pair": ...} or {"texts": ["a", ["a", "b"], ...]}
    GET  /healthz    the models served (no file paths), the batching settings and limits
    GET  /metrics    Prometheus text format: requests, latency, batch sizes, in-flight requests

Every model endpoint calls the function its CLI command calls (``fill_mask``, ``embed``,
``classify`` in ``infer/pipelines.py``) on a backend chosen at start-up: an ``--onnx`` export of
that head (onnxruntime, its SHA-256 checked) when given, else the PyTorch model of ``--model``.
Items of concurrent requests are batched by ``serve/batcher.py``; all model calls run in one
worker thread.

What one client can do to the others is bounded in three layers, each answering with one JSON
error shape ``{"error", "field"?, "limit"?, "value"?, "request_id"}`` for every status:
``serve/protocol.py`` (connections, header size and time), ``serve/guard.py`` (API key, requests in
flight, body size and time, the request id, internal errors) and ``serve/requests.py`` (each field of
the body, texts, characters, masks, top_k, candidates) -- all before any model work, so a bad item
fails only its own request. The limits are ``ServeLimits`` (``serve/config.py``) and docs/serve.md.
SIGTERM stops accepting connections, lets the requests in flight finish for at most
``--shutdown_timeout_s``, then exits 0.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from miniroberta.infer.backends import Backend, read_onnx_meta
from miniroberta.infer.pipelines import classify, embed, encode_fill_mask, fill_mask_ids, load_backend
from miniroberta.interop.checkpoint import find_model_dir, load_weights
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.serve.batcher import MicroBatcher
from miniroberta.serve.config import API_KEY_ENV, ServeConfig, ServeLimits, is_loopback
from miniroberta.serve.guard import BODY_KEY, INTERNAL, RID_KEY, Guard, Metrics, error_bytes, log_internal
from miniroberta.serve.protocol import guarded_protocol
from miniroberta.serve.requests import RequestError, encode_fill_mask_checked, item_names, parse_body, \
    parse_classify, parse_embed, parse_fill_mask
from miniroberta.settings import add_options, from_args
from miniroberta.utils import log

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - depends on the install
    raise RuntimeError('miniroberta serve needs the serve extra: pip install -e ".[serve]"') from e

FAULT_ENV = "MINIROBERTA_SERVE_FAULT"   # test hook: a text that makes its batch raise (internal-error path)
ENDPOINTS = "POST /fill-mask, /embed, /classify; GET /healthz, /metrics"


@dataclass
class Service:
    """One served head: its backend, tokenizer and batcher."""

    task: str
    backend: Backend
    tokenizer: BertTokenizer
    batcher: Any = None
    source: str = ""       # where it was loaded from (the start-up log line; never sent to clients)
    run: Any = None        # a batch function replacing the pipeline call (the bench's baseline uses it)


def json_response(obj: Any, status: int = 200) -> Response:
    try:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:   # not expected (inputs are checked), but never a 500 for it
        body = json.dumps(obj).encode("ascii")
    return Response(body, status_code=status, media_type="application/json")


def error_response(request: Request, err: RequestError) -> Response:
    return Response(error_bytes(err, request.scope.get(RID_KEY)), status_code=err.status,
                    media_type="application/json", headers={k.decode(): v.decode() for k, v in err.headers})


# ------------------------------------------------------------------------------- running
def _text_of(item: Any) -> Any:
    return item if isinstance(item, str) else item[0] if isinstance(item, tuple) else None


def _run_fn(service: Service, limits: ServeLimits):
    """The batch function of one head: the same pipeline call as its CLI command (fill-mask on the ids
    the request was checked with)."""
    fault = os.environ.get(FAULT_ENV)
    be, tok = service.backend, service.tokenizer

    def run(key: Hashable, items: list[Any]) -> Sequence[Any]:
        if fault and any(_text_of(it) == fault for it in items):
            raise RuntimeError(f"injected fault ({FAULT_ENV})")
        if service.task == "fill-mask":
            top_k: Any = key
            return fill_mask_ids(be, tok, items, top_k=int(top_k), batch_size=limits.max_batch)
        if service.task == "embed":
            return embed(be, tok, items, pooling=str(key), seq_length=limits.seq_length,
                         batch_size=limits.max_batch).tolist()
        return classify(be, tok, items, batch_size=limits.max_batch)
    return run


def _install_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI/Starlette would answer themselves, in the server's JSON shape."""

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        where = f"{request.method} {request.url.path[:100]}"
        if exc.status_code == 404:
            msg = f"no such endpoint: {where}; this server has {ENDPOINTS}"
        elif exc.status_code == 405:
            msg = f"{where} is not allowed; use {(exc.headers or {}).get('Allow', 'another method')}"
        else:
            msg = str(exc.detail)[:200]
        return error_response(request, RequestError(exc.status_code, msg, headers=[
            (k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:  # not expected: bodies are ours
        return error_response(request, RequestError(422, "malformed request", field="body"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:   # logged before the client hears of it
        log_internal(request.scope.get(RID_KEY, "?"), request.scope, exc)
        return error_response(request, RequestError(500, INTERNAL))


def _add_model_routes(app: FastAPI, services: dict[str, Service], limits: ServeLimits) -> None:
    def service(task: str) -> Service:
        s = services.get(task)
        if s is None:
            raise RequestError(404, f"this server has no {task} model; start it with a --model that has a {task} "
                                    f"head or --onnx with a `--task {task}` export", served=sorted(services))
        return s

    @app.post("/fill-mask")
    async def fill_mask_ep(request: Request) -> Response:
        s = service("fill-mask")
        obj = parse_body(request.scope.pop(BODY_KEY))
        req = parse_fill_mask(obj, limits)
        ids = encode_fill_mask_checked(s.tokenizer, req, s.backend.info, limits, item_names(obj, len(req.items)))
        return json_response({"results": await s.batcher.submit([(req.top_k, row) for row in ids])})

    @app.post("/embed")
    async def embed_ep(request: Request) -> Response:
        s = service("embed")
        req = parse_embed(parse_body(request.scope.pop(BODY_KEY)), limits)
        out = await s.batcher.submit([(req.pooling, t) for t in req.items])
        return json_response({"pooling": req.pooling, "dim": len(out[0]) if out else 0, "embeddings": out})

    @app.post("/classify")
    async def classify_ep(request: Request) -> Response:
        s = service("classify")
        req = parse_classify(parse_body(request.scope.pop(BODY_KEY)), limits)
        out = await s.batcher.submit([("single" if isinstance(t, str) else "pair", t) for t in req.items])
        return json_response({"results": out})


def create_app(services: dict[str, Service], limits: ServeLimits | None = None,
               api_key: str | None = None) -> Guard:
    """The ASGI app serving ``services`` (task -> Service) with micro-batching: the FastAPI app
    wrapped in ``Guard`` (the FastAPI object is its ``.app``)."""
    limits = limits or ServeLimits()
    metrics = Metrics.create()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for s in services.values():
            s.batcher = MicroBatcher(s.task, s.run or _run_fn(s, limits), executor, limits.max_batch,
                                     limits.max_wait_ms, metrics.on_batch)
            s.batcher.start()
        yield
        for s in services.values():
            await s.batcher.stop()
        executor.shutdown(wait=True)

    app = FastAPI(title="miniroberta", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)   # /classify/ is a 404 in the error shape, not a redirect
    app.state.services, app.state.metrics, app.state.limits = services, metrics, limits
    _install_error_handlers(app)
    _add_model_routes(app, services, limits)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok", "uptime_s": round(time.time() - started, 3),
                              "models": {t: s.backend.describe() for t, s in services.items()},
                              "batching": {"max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms},
                              "limits": limits.as_dict(), "api_key": api_key is not None})

    @app.get("/metrics")
    async def metrics_ep() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415 - serve extra
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Guard(app, services, metrics, limits, api_key)


# ------------------------------------------------------------------------------ start-up
def heads_of(model: str) -> list[str]:
    """The tasks a checkpoint can serve: embed always, fill-mask with an MLM head, classify with a classifier."""
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


def warm_up(services: dict[str, Service], limits: ServeLimits) -> None:
    """One call per head so the first request does not pay for lazy initialisation."""
    for s in services.values():
        run = _run_fn(s, limits)
        if s.task == "fill-mask":
            run(5, encode_fill_mask(s.tokenizer, ["[MASK]"], s.backend.info.max_length))
        else:
            run("cls" if s.task == "embed" else "single", ["你好"])


def configure(p: argparse.ArgumentParser) -> None:
    groups: dict[str, Any] = {}
    add_options(p, ServeConfig, groups=groups)
    add_options(p, ServeLimits, groups=groups)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    cfg = from_args(ServeConfig, args, limits=from_args(ServeLimits, args))
    if cfg.api_key is None and os.environ.get(API_KEY_ENV):
        cfg.api_key = os.environ[API_KEY_ENV]
    return cfg.validate()


def run(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - optional dependency (serve extra)
    cfg = config_from_args(args)
    lim = cfg.limits
    if cfg.api_key is None and not is_loopback(cfg.host):
        log(f"serve: warning: binding {cfg.host} (reachable from other machines) without --api_key: anyone who "
            f"can reach the port can use the models; set --api_key or ${API_KEY_ENV}")
    services = build_services(cfg.model, cfg.onnx, cfg.vocab_path, cfg.threads, cfg.task_list())
    warm_up(services, lim)
    app = create_app(services, lim, api_key=cfg.api_key)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=cfg.access_log,
                            lifespan="on", http=guarded_protocol(lim), timeout_keep_alive=lim.keep_alive_s,
                            timeout_graceful_shutdown=lim.shutdown_timeout_s, server_header=False)
    server = uvicorn.Server(config)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal for the previous
    # handler; this one makes that a clean exit 0 instead of death by signal.
    terminated: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    desc = ", ".join(f"{t} ({s.backend.name}, {s.source})" for t, s in services.items())
    log(f"serve: http://{cfg.host}:{cfg.port} -- {desc}; max_batch {lim.max_batch}, max_wait_ms {lim.max_wait_ms}, "
        f"max_in_flight {lim.max_in_flight}, api key {'required' if cfg.api_key else 'off'}")
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        log("serve: SIGTERM -- in-flight requests finished, exiting")
    return 0 if server.started or terminated else 1


__all__ = ["create_app", "build_services", "Service", "configure", "run", "heads_of", "config_from_args",
           "json_response", "FAULT_ENV"]
