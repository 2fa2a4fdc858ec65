"""``miniroberta serve`` settings: ``ServeConfig`` (what is served, where, who may call it) and
``ServeLimits`` (batching, and every bound on the work, memory and time one client can take).

Both are the single source of the command's options (``miniroberta.settings``); docs/serve.md lists the
limits with these defaults. ``max_body_bytes`` derives from the text limits unless given.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from miniroberta.infer.backends import TASKS
from miniroberta.settings import option, validate

SERVED, NETWORK, BATCHING = "what to serve", "network and access", "batching"
LIMITS = "limits (per request, per server)"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
API_KEY_ENV = "MINIROBERTA_API_KEY"


@dataclass(kw_only=True)
class ServeLimits:
    """Batching and the bounds every request is checked against before any model work."""
    max_batch: int = option(32, "most texts in one model call", effect="speed", group=BATCHING, ge=1)
    max_wait_ms: float = option(2.0, "longest a text waits for others to join its batch (0: only what is already "
                                "queued)", effect="speed", group=BATCHING, ge=0, le=10000)
    seq_length: int = option(128, "embed: tokens per text, as `miniroberta embed`", effect="result",
                             group=BATCHING, ge=2)
    max_items: int = option(64, "most texts per request (413)", effect="speed", group=LIMITS, ge=1)
    max_chars: int = option(2000, "most characters per text, a pair counting both (413)", effect="speed",
                            group=LIMITS, ge=1)
    max_top_k: int = option(100, "fill-mask: largest top_k (422)", effect="speed", group=LIMITS, ge=1)
    max_masks: int = option(16, "fill-mask: most [MASK] tokens in one text (413)", effect="speed", group=LIMITS,
                            ge=1)
    max_results: int = option(2048, "fill-mask: most candidates in one response, texts x masks x top_k (413)",
                              effect="speed", group=LIMITS, ge=1)
    max_body_bytes: int | None = option(
        None, "largest request body, counted as it arrives, chunked or not (413)", effect="speed", group=LIMITS,
        ge=1024, default_text="max_items x (6 x max_chars + 64) + 64 KiB: 818 KiB")
    max_header_bytes: int = option(32768, "largest request line and headers (431)", effect="speed", group=LIMITS,
                                   ge=1024)
    max_in_flight: int = option(128, "most model requests inside the server at once; more get 503 with "
                                "Retry-After", effect="speed", group=LIMITS, ge=1)
    max_connections: int = option(512, "most open connections; more get 503 with Retry-After", effect="speed",
                                  group=LIMITS, ge=1)
    read_timeout_s: float = option(10.0, "a request's headers, and then its body, must arrive within this many "
                                   "seconds (408)", effect="speed", group=LIMITS, gt=0, le=3600)
    keep_alive_s: int = option(5, "an idle keep-alive connection is closed after this many seconds",
                               effect="speed", group=LIMITS, ge=1, le=3600)
    shutdown_timeout_s: int = option(20, "SIGTERM: longest wait for requests in flight before they are "
                                     "cancelled", effect="speed", group=LIMITS, ge=0, le=3600)

    def body_limit(self) -> int:
        """The largest request body: every text at ``max_chars`` as ``\\uXXXX`` escapes plus room for the JSON."""
        return self.max_body_bytes or self.max_items * (self.max_chars * 6 + 64) + 65536

    def as_dict(self) -> dict[str, Any]:
        """The limits as /healthz shows them (max_body_bytes resolved)."""
        return {"max_items": self.max_items, "max_chars": self.max_chars, "max_top_k": self.max_top_k,
                "max_masks": self.max_masks, "max_results": self.max_results, "max_body_bytes": self.body_limit(),
                "max_header_bytes": self.max_header_bytes, "max_in_flight": self.max_in_flight,
                "max_connections": self.max_connections, "read_timeout_s": self.read_timeout_s,
                "seq_length": self.seq_length}

    def validate(self) -> "ServeLimits":
        return validate(self, "server limits")


@dataclass(kw_only=True)
class ServeConfig:
    """What ``miniroberta serve`` serves and to whom."""
    model: str | None = option(None, "HF/native checkpoint or fine-tune --output_dir (PyTorch); serves the heads it "
                               "has", effect="result", group=SERVED, default_text="none")
    onnx: list[str] = option(default_factory=list, help="export-onnx graphs (fp32 or int8) served with onnxruntime "
                             "instead of PyTorch, one per head; checked against the SHA-256 in their side JSON",
                             effect="result", group=SERVED, repeatable=True, default_text="none")
    tasks: str | None = option(None, "comma-separated subset of fill-mask,embed,classify to serve", effect="result",
                               group=SERVED, default_text="every head available")
    vocab_path: str | None = option(None, "vocab.txt", effect="result", group=SERVED,
                                    default_text="the one beside the model or graph")
    threads: int = option(0, "intra-op threads of the model (0: let the library choose)", effect="speed",
                          group=SERVED, ge=0)
    host: str = option("127.0.0.1", "address to bind; a non-loopback one without --api_key logs a warning",
                       effect="speed", group=NETWORK)
    port: int = option(8000, "TCP port", effect="speed", group=NETWORK, ge=0, le=65535)
    api_key: str | None = option(None, "require this key on every endpoint but /healthz, sent as 'Authorization: "
                                 f"Bearer KEY' or 'X-API-Key: KEY' (${API_KEY_ENV} keeps it out of the process "
                                 "list)", effect="speed", group=NETWORK, default_text=f"${API_KEY_ENV}, else none")
    access_log: bool = option(False, "log every request (uvicorn access log)", effect="speed", group=NETWORK)
    log_level: str = option("warning", "uvicorn log level", effect="speed", group=NETWORK, choices=LOG_LEVELS)
    limits: ServeLimits = field(default_factory=ServeLimits)

    def task_list(self) -> list[str] | None:
        return [t.strip() for t in self.tasks.split(",") if t.strip()] if self.tasks else None

    def problems(self) -> list[str]:
        out = []
        unknown = sorted(set(self.task_list() or ()) - set(TASKS))
        if unknown:
            out.append(f"--tasks: unknown {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        if not self.model and not self.onnx:
            out.append("nothing to serve: pass --model DIR and/or --onnx FILE")
        if self.api_key is not None and len(self.api_key) < 16:
            out.append("--api_key: use at least 16 characters (e.g. `python -c 'import secrets; "
                       "print(secrets.token_urlsafe(24))'`)")
        return out

    def validate(self) -> "ServeConfig":
        self.limits.validate()
        return validate(self, "serve settings")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


__all__ = ["ServeConfig", "ServeLimits", "is_loopback", "API_KEY_ENV"]
