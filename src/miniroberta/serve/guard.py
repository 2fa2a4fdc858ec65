"""The ASGI layer in front of the FastAPI app: every request passes here first, and only here is
its body read.

Per request, in this order, before any parsing or model work:

1. a request id (``X-Request-ID`` on every response, ``request_id`` in every error body, and in
   the log line of an internal error -- whose text never reaches the client);
2. the API key, when the server has one (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``,
   compared in constant time; ``/healthz`` stays open) -> 401;
3. the in-flight bound: at most ``max_in_flight`` model requests inside the server -> 503 with
   ``Retry-After``, instead of an unbounded queue;
4. the body, read here as it arrives and counted byte by byte whether or not it is chunked: 413 as
   soon as it passes ``max_body_bytes`` (a declared Content-Length over it is refused unread), 408
   when it has not arrived ``read_timeout_s`` after the first read.

A response sent before the request body was read whole (401, 503, 413, 408, 404 ...) carries
``Connection: close``, so nothing more of that body is read. Any exception that escapes the app is
logged with the request id and answered with the JSON error shape, never plain text. Prometheus
metrics (requests by status, latency, in-flight gauge) are kept here too.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Mapping

from miniroberta.serve.config import ServeLimits
from miniroberta.serve.requests import RequestError
from miniroberta.utils import log

KNOWN = ("/fill-mask", "/embed", "/classify", "/healthz", "/metrics")
MODEL_PATHS = {"/fill-mask": "fill-mask", "/embed": "embed", "/classify": "classify"}
OPEN_PATHS = ("/healthz",)
BODY_KEY = "miniroberta.body"          # the request body, read by the guard, in the ASGI scope
RID_KEY = "miniroberta.request_id"
INTERNAL = "internal error; the server log has the details under this request_id"


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


def error_bytes(err: RequestError, request_id: str | None) -> bytes:
    body = err.body()
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body).encode("ascii")   # ASCII: an echoed field name cannot break the encoding


def log_internal(request_id: str, scope: Mapping[str, Any], exc: BaseException) -> None:
    """The log line of an internal error (once per exception), with its request id and traceback."""
    if getattr(exc, "_miniroberta_logged", False):
        return
    with contextlib.suppress(AttributeError):
        exc._miniroberta_logged = True  # type: ignore[attr-defined]
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    log(f"serve: request {request_id} ({scope.get('method')} {scope.get('path')}): internal error "
        f"{type(exc).__name__}: {str(exc)[:500]}\n{tb}")


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
        from prometheus_client import (  # noqa: PLC0415 - optional dependency (serve extra)
            CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics)
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


class _Exchange:
    """One request's response side: adds X-Request-ID (and Connection: close while the body is unread)
    to the response headers, remembers the status, sends error bodies."""

    __slots__ = ("raw", "rid", "status", "started", "close")

    def __init__(self, send: Any, rid: str) -> None:
        self.raw, self.rid, self.status, self.started, self.close = send, rid, "none", False, False

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = str(message["status"])
            headers = [*message.get("headers", ()), (b"x-request-id", self.rid.encode())]
            if self.close:
                headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await self.raw(message)

    async def error(self, err: RequestError) -> None:
        if self.started:      # too late for another response; the connection is closed by the server
            return
        body = error_bytes(err, self.rid)
        await self.send({"type": "http.response.start", "status": err.status,
                         "headers": [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(body)).encode()), *err.headers]})
        await self.send({"type": "http.response.body", "body": body})


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[bool, int]:
    """(whether the request has a body, its declared length or -1 when chunked)."""
    length, chunked = 0, False
    for k, v in headers:
        if k == b"content-length":
            try:
                length = int(v)
            except ValueError:
                length = 0
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    return (chunked or length > 0), (-1 if chunked else length)


class Guard:
    """ASGI middleware wrapping the FastAPI app (``.app``); see the module docstring."""

    def __init__(self, app: Any, services: dict[str, Any], metrics: Metrics, limits: ServeLimits,
                 api_key: str | None = None) -> None:
        self.app, self.services, self.metrics, self.limits = app, services, metrics, limits
        self.state = app.state
        self.max_body = limits.body_limit()
        self.key = api_key.encode("utf-8") if api_key else None
        self.in_flight = 0
        self._prefix, self._n = secrets.token_hex(4), 0

    def _authorize(self, headers: list[tuple[bytes, bytes]]) -> None:
        given = None
        for k, v in headers:
            if k == b"authorization":
                scheme, _, token = v.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
            elif k == b"x-api-key":
                given = v.strip()
        challenge = [(b"www-authenticate", b'Bearer realm="miniroberta"')]
        if given is None:
            raise RequestError(401, "this server needs an API key: send 'Authorization: Bearer KEY' or "
                                    "'X-API-Key: KEY'", field="authorization", headers=challenge)
        if not hmac.compare_digest(given, self.key or b""):
            raise RequestError(401, "wrong API key", field="authorization", headers=challenge)

    async def _read_body(self, receive: Any, declared: int) -> bytes:
        limit = self.max_body
        if declared > limit:
            raise RequestError(413, f"the request body of {declared} bytes is larger than this server accepts "
                                    f"({limit} bytes, --max_body_bytes)", limit="max_body_bytes", value=limit)
        chunks, n = [], 0
        try:
            async with asyncio.timeout(self.limits.read_timeout_s):
                while True:
                    msg = await receive()
                    if msg["type"] != "http.request":
                        raise ClientGone
                    chunk = msg.get("body", b"")
                    if chunk:
                        n += len(chunk)
                        if n > limit:
                            raise RequestError(413, f"the request body is larger than this server accepts ({limit} "
                                                    f"bytes, --max_body_bytes); refused after {n} bytes",
                                               limit="max_body_bytes", value=limit)
                        chunks.append(chunk)
                    if not msg.get("more_body", False):
                        break
        except TimeoutError:
            t = self.limits.read_timeout_s
            raise RequestError(408, f"the request body did not arrive within {t:g} s (--read_timeout_s)",
                               limit="read_timeout_s", value=t) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self._n += 1
        rid = scope[RID_KEY] = f"{self._prefix}-{self._n:x}"
        path = scope["path"]
        endpoint = path if path in KNOWN else "other"
        service = self.services.get(MODEL_PATHS.get(path, "")) if scope["method"] == "POST" else None
        ex = _Exchange(send, rid)
        t0 = time.perf_counter()
        counted = False
        try:
            has_body, declared = _framing(scope["headers"])
            ex.close = has_body                 # until the body is read, a response ends the connection
            if self.key is not None and path not in OPEN_PATHS:
                self._authorize(scope["headers"])
            if service is not None:
                if self.in_flight >= self.limits.max_in_flight:
                    raise RequestError(503, f"this server is handling --max_in_flight {self.limits.max_in_flight} "
                                            f"requests; retry shortly", limit="max_in_flight",
                                       value=self.limits.max_in_flight, headers=[(b"retry-after", b"1")])
                counted = True
                self.in_flight += 1
                service.batcher.inflight += 1
                self.metrics.in_flight.labels(endpoint).inc()
                scope[BODY_KEY] = await self._read_body(receive, declared) if has_body else b""
                ex.close = False
            await self.app(scope, receive, ex.send)
        except ClientGone:
            pass
        except RequestError as e:
            await ex.error(e)
        except Exception as e:  # noqa: BLE001 - a bug: logged with the request id, the client gets the id only
            log_internal(rid, scope, e)
            await ex.error(RequestError(500, INTERNAL))
        finally:
            if counted and service is not None:
                self.in_flight -= 1
                service.batcher.inflight -= 1
                self.metrics.in_flight.labels(endpoint).dec()
            self.metrics.requests.labels(endpoint, ex.status).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


__all__ = ["Guard", "Metrics", "BODY_KEY", "RID_KEY", "INTERNAL", "error_bytes", "log_internal", "ClientGone"]
