"""Connection-level guards for uvicorn: what happens before a request reaches the ASGI app.

uvicorn reads a request's line and headers with no time or size limit, and accepts any number of
connections (slowloris: 3,000 connections trickling headers were held indefinitely). ``guarded_protocol``
returns uvicorn's HTTP protocol class (httptools, else h11) with three bounds added:

* a connection must deliver a request's line and headers within ``read_timeout_s`` of connecting or of
  its first byte after the previous response (an idle keep-alive connection is closed after
  ``keep_alive_s`` by uvicorn itself) -> 408, closed;
* at most ``max_header_bytes`` of them -> 431, closed;
* at most ``max_connections`` open connections -> 503 with ``Retry-After``, closed.

These answers, and uvicorn's own 400 for unparsable HTTP, use the server's JSON error shape. The body
and everything after the headers is bounded by ``serve/guard.py``.
"""
from __future__ import annotations

import json
from typing import Any

from miniroberta.serve.config import ServeLimits

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
           503: b"Service Unavailable"}


class _GuardMixin:
    """Mixed into uvicorn's ``HttpToolsProtocol`` / ``H11Protocol`` (their ``cycle``, ``connections``,
    ``transport`` and ``loop`` attributes are what is read here)."""

    header_timeout = 10.0
    max_header_bytes = 32768
    max_connections = 512
    _mr_timer: Any = None
    _mr_bytes = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:  # type: ignore[attr-defined]
            self._mr_refuse(503, f"this server has --max_connections {self.max_connections} open connections; "
                                 f"retry shortly", "max_connections", self.max_connections, retry=True)
            return
        self._mr_arm()

    def data_received(self, data: bytes) -> None:
        if self._mr_waiting():          # these bytes start (or continue) a request line and headers
            end = data.find(b"\r\n\r\n")
            self._mr_bytes += len(data) if end < 0 else end + 4
            if self._mr_bytes > self.max_header_bytes:
                self._mr_refuse(431, f"the request line and headers are larger than this server accepts "
                                     f"({self.max_header_bytes} bytes, --max_header_bytes)", "max_header_bytes",
                                self.max_header_bytes)
                return
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():  # type: ignore[attr-defined]
            self._mr_disarm()
        elif not self._mr_waiting():    # the headers are complete: the request belongs to the app now
            self._mr_disarm()
            self._mr_bytes = 0
        elif self._mr_timer is None:
            self._mr_arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._mr_disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def send_400_response(self, msg: str) -> None:
        self._mr_refuse(400, f"not a valid HTTP request ({msg.rstrip('.')})", None, None)

    # ------------------------------------------------------------------------------------------
    def _mr_waiting(self) -> bool:
        """No request in progress: the connection is (or should be) sending a request's headers."""
        cycle = self.cycle  # type: ignore[attr-defined]
        return cycle is None or cycle.response_complete

    def _mr_arm(self) -> None:
        self._mr_disarm()
        self._mr_timer = self.loop.call_later(self.header_timeout, self._mr_timeout)  # type: ignore[attr-defined]

    def _mr_disarm(self) -> None:
        if self._mr_timer is not None:
            self._mr_timer.cancel()
            self._mr_timer = None

    def _mr_timeout(self) -> None:
        self._mr_timer = None
        if self._mr_waiting() and not self.transport.is_closing():  # type: ignore[attr-defined]
            self._mr_refuse(408, f"no complete request line and headers within {self.header_timeout:g} s "
                                 f"(--read_timeout_s)", "read_timeout_s", self.header_timeout)

    def _mr_refuse(self, status: int, message: str, limit: str | None, value: Any, retry: bool = False) -> None:
        self._mr_disarm()
        body: dict[str, Any] = {"error": message}
        if limit:
            body.update(limit=limit, value=value)
        data = json.dumps(body).encode("ascii")
        head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n"
                % (status, REASONS[status], len(data)))
        if retry:
            head += b"retry-after: 1\r\n"
        transport = self.transport  # type: ignore[attr-defined]
        if not transport.is_closing():
            transport.write(head + b"\r\n" + data)
            transport.close()


def guarded_protocol(limits: ServeLimits, base: type | None = None) -> type:
    """uvicorn's HTTP protocol class (httptools if installed, else h11) with the bounds of ``limits``."""
    if base is None:
        base_cls: type
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base_cls  # noqa: PLC0415
        except ImportError:  # pragma: no cover - httptools is in the serve extra
            from uvicorn.protocols.http.h11_impl import H11Protocol as base_cls  # noqa: PLC0415
        base = base_cls
    return type(f"Guarded{base.__name__}", (_GuardMixin, base),
                {"header_timeout": float(limits.read_timeout_s), "max_header_bytes": int(limits.max_header_bytes),
                 "max_connections": int(limits.max_connections)})


__all__ = ["guarded_protocol"]
