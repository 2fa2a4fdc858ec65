"""Tiny random models for the ONNX and serving tests: an MLM export and a classifier export
(HF directories written by our own code, with a small vocab); ``Server``: `miniroberta serve` in a
subprocess on a free loopback port."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from _ft_data import FILLER, KEYWORDS, write_vocab

from miniroberta.interop.export import write_hf_dir
from miniroberta.modeling.bert import BertForMaskedLM, BertForSequenceClassification
from miniroberta.modeling.config import preset, replace

EXTRA = list("天气很今我们去公园散步吧书喜欢这本下雨出门首都京")


def small_vocab(path: Path) -> Path:
    return write_vocab(path, FILLER + KEYWORDS + EXTRA)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that outputs depend clearly on the input (no near-ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def mlm_dir(out: Path, vocab: Path, size: str = "L2_H128", seed: int = 0, max_len: int = 128) -> Path:
    n = len(vocab.read_text(encoding="utf-8").splitlines())
    cfg = replace(preset(size, vocab_size=n), max_position_embeddings=max_len)
    m = BertForMaskedLM(cfg)
    _perturb(m, seed)
    m.cls.predictions.transform.LayerNorm.weight.data.fill_(20.0)
    write_hf_dir(m.state_dict(), cfg, str(vocab), str(out))
    return out


def classifier_dir(out: Path, vocab: Path, size: str = "L2_H128", seed: int = 0, labels=("0", "1"),
                   seq_length: int = 32, max_len: int = 128) -> Path:
    """A random BertForSequenceClassification in the layout `miniroberta finetune` writes (model/ with
    finetune.json)."""
    n = len(vocab.read_text(encoding="utf-8").splitlines())
    cfg = replace(preset(size, vocab_size=n), max_position_embeddings=max_len, id2label=dict(enumerate(labels)))
    m = BertForSequenceClassification(cfg)
    _perturb(m, seed)
    ft = {"task": None, "labels": list(labels), "seq_length": seq_length, "truncation": "longest_first",
          "text_fields": ["text_a"], "label_field": "label"}
    write_hf_dir(m.state_dict(), cfg, str(vocab), str(out), architecture="BertForSequenceClassification",
                 extra_files={"finetune.json": json.dumps(ft)})
    return out


# ------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`miniroberta serve ARGS` in a subprocess on 127.0.0.1; ready once /healthz answers (at most 90 s)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        import httpx  # noqa: PLC0415 - optional (the serve extra); only the server tests use it
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_f = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "miniroberta.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--threads", "1", *args],
            stdout=self._log_f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=headers or {})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log_f.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not come up in 90 s:\n{log.read_text(errors='replace')}")

    def metric(self, name: str, **labels: str) -> float:
        want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + want + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def rss_kb(self, field: str = "VmRSS") -> int:
        """The server process's resident memory (``VmHWM``: its peak), in KiB, from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_f.close()
        return self.proc.returncode
