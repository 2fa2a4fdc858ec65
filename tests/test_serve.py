"""`miniroberta serve` for real: a subprocess on 127.0.0.1, talked to with httpx.

Each endpoint equals its CLI command on the same inputs; limits, malformed bodies and an
internal error give JSON errors and the server lives on; concurrent requests are batched
(seen in /metrics); SIGTERM lets an in-flight request finish and exits 0. Loopback only,
every wait bounded."""
from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")

from _serve_models import Server, classifier_dir, mlm_dir, small_vocab  # noqa: E402

from miniroberta import cli  # noqa: E402
from miniroberta.infer.onnx_export import export_onnx  # noqa: E402
from miniroberta.infer.pipelines import classify, load_backend  # noqa: E402

FAULT = "触发内部错误"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    vocab = small_vocab(d / "vocab.txt")
    mlm = mlm_dir(d / "mlm", vocab)
    cls = classifier_dir(d / "cls" / "model", vocab)
    onnx = d / "onnx" / "classify.onnx"
    export_onnx(str(cls), "classify", str(onnx))
    return dict(dir=d, vocab=vocab, mlm=mlm, cls=cls, onnx=onnx)


@pytest.fixture(scope="module")
def server(models):
    s = Server(["--model", str(models["mlm"]), "--onnx", str(models["onnx"]), "--max_items", "8",
                "--max_chars", "60", "--max_batch", "64", "--max_wait_ms", "100", "--max_masks", "4",
                "--max_results", "1000"],
               models["dir"] / "server.log", env={"MINIROBERTA_SERVE_FAULT": FAULT})
    yield s
    assert s.stop() == 0, s.log.read_text(errors="replace")


TEXTS = ["今天天气很[MASK]，我们去公园散步吧", "我喜欢这本[MASK]", "[MASK]国的首都是[MASK]京", "好"]


def test_healthz(server):
    h = server.client.get("/healthz").json()
    assert h["status"] == "ok"
    assert {t: m["backend"] for t, m in h["models"].items()} == \
        {"fill-mask": "torch", "embed": "torch", "classify": "onnxruntime"}
    assert h["limits"]["max_items"] == 8 and h["limits"]["max_chars"] == 60
    assert h["limits"]["max_body_bytes"] == 8 * (60 * 6 + 64) + 65536
    assert h["api_key"] is False


def test_fill_mask_equals_cli(server, models, capsys):
    texts = TEXTS[:3]
    r = server.client.post("/fill-mask", json={"texts": texts, "top_k": 3})
    assert r.status_code == 200
    got = r.json()["results"]
    assert cli.main(["fill-mask", "--model", str(models["mlm"]), "--json", "--top_k", "3", *texts]) == 0
    want = [json.loads(line)["predictions"] for line in capsys.readouterr().out.splitlines()]
    assert len(got) == len(want) == 3
    assert isinstance(got[2], list) and len(got[2]) == 2  # two masks: one list per mask, as the CLI
    flat = lambda r: [d for g in r for d in (g if isinstance(g, list) else [g])]  # noqa: E731
    for g, w in zip(got, want):
        assert [(d["token"], d["token_str"], d["sequence"]) for d in flat(g)] == \
               [(d["token"], d["token_str"], d["sequence"]) for d in flat(w)]
        np.testing.assert_allclose([d["score"] for d in flat(g)], [d["score"] for d in flat(w)], rtol=1e-5, atol=1e-7)
    one = server.client.post("/fill-mask", json={"text": texts[1], "top_k": 3}).json()["results"]
    assert len(one) == 1  # the endpoint always answers with a list, one entry per text
    assert [d["token"] for d in one[0]] == [d["token"] for d in want[1]]


def test_embed_equals_cli(server, models, tmp_path):
    texts = ["今天天气很好", "我喜欢这本书", ""]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    for pooling in ("cls", "mean"):
        r = server.client.post("/embed", json={"texts": texts, "pooling": pooling})
        assert r.status_code == 200
        body = r.json()
        assert body["pooling"] == pooling and body["dim"] == 128
        out = tmp_path / f"{pooling}.npy"
        assert cli.main(["embed", "--model", str(models["mlm"]), "--input", str(tmp_path / "in.txt"),
                         "--output", str(out), "--pooling", pooling]) == 0
        np.testing.assert_allclose(np.array(body["embeddings"], dtype=np.float32), np.load(out), atol=1e-5)


def test_classify_equals_predict(server, models, tmp_path):
    texts = ["好的一是在不了", "坏的一是", "有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可"]
    (tmp_path / "in.tsv").write_text("text_a\n" + "".join(t + "\n" for t in texts), encoding="utf-8")
    assert cli.main(["predict", "--onnx", str(models["onnx"]), "--input", str(tmp_path / "in.tsv"),
                     "--output", str(tmp_path / "out.tsv"), "--output_prob"]) == 0
    rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()[1:]]
    got = server.client.post("/classify", json={"texts": texts}).json()["results"]
    assert [g["label"] for g in got] == [r[0] for r in rows]
    for g, r in zip(got, rows):
        np.testing.assert_allclose([g["scores"]["0"], g["scores"]["1"]], [float(x) for x in r[1].split()], atol=2e-6)
        assert g["score"] == max(g["scores"].values())
    # a pair, alone and mixed with a single text in one list
    be, tok = load_backend("classify", onnx=str(models["onnx"]))
    want_pair = classify(be, tok, [("好的一是", "坏了有和")])[0]
    single = server.client.post("/classify", json={"text": "好的一是", "text_pair": "坏了有和"}).json()["results"]
    mixed = server.client.post("/classify", json={"texts": [["好的一是", "坏了有和"], texts[0]]}).json()["results"]
    for res in (single[0], mixed[0]):
        assert res["label"] == want_pair["label"]
        assert res["scores"]["1"] == pytest.approx(want_pair["scores"]["1"], abs=1e-5)
    assert mixed[1]["label"] == got[0]["label"]


@pytest.mark.parametrize("path,body,status,key,value", [
    ("/classify", {"texts": ["好"] * 9}, 413, "limit", "max_items"),
    ("/embed", {"text": "好" * 61}, 413, "limit", "max_chars"),
    ("/classify", {"text": "好" * 31, "text_pair": "坏" * 30}, 413, "limit", "max_chars"),
    ("/classify", {"texts": ["好", ["好" * 31, "坏" * 30]]}, 413, "field", "texts[1][1]"),
    ("/fill-mask", {"text": "没有掩码"}, 400, "field", "text"),
    ("/fill-mask", {"texts": ["好[MASK]", "没有掩码"]}, 400, "field", "texts[1]"),
    ("/fill-mask", {"texts": "not a list"}, 422, "field", "texts"),
    ("/fill-mask", {"text": "[MASK]", "top_k": 0}, 422, "field", "top_k"),
    ("/fill-mask", {"text": "[MASK]", "top_k": True}, 422, "field", "top_k"),
    ("/fill-mask", {"text": "[MASK]", "top_k": 101}, 422, "limit", "max_top_k"),
    ("/fill-mask", {"text": "[MASK]" * 5}, 413, "limit", "max_masks"),
    ("/fill-mask", {"texts": ["[MASK]" * 4] * 8, "top_k": 100}, 413, "limit", "max_results"),
    ("/embed", {"text": "好", "pooling": "max"}, 422, "field", "pooling"),
    ("/embed", {"txt": "好"}, 422, "field", "txt"),
    ("/embed", {"texts": ["好", 3]}, 422, "field", "texts[1]"),
    ("/classify", {}, 422, "field", "text"),
    ("/classify", {"texts": [["a", "b", "c"]]}, 422, "field", "texts[0]"),
    ("/classify", {"text": "好", "texts": ["好"]}, 422, "field", "texts"),
    ("/classify", {"texts": ["好"], "text_pair": "坏"}, 422, "field", "text_pair"),
])
def test_errors_are_json_naming_the_problem(server, path, body, status, key, value):
    r = server.client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert "error" in err and err["error"] and err["request_id"] == r.headers["x-request-id"]
    assert err[key] == value
    if status == 413 and key == "limit":
        assert f"--{value}" in err["error"]


def test_oversized_body_refused_unread(server):
    r = server.client.post("/embed", content=json.dumps({"texts": ["好" * 80000]}).encode(),
                           headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"
    assert server.client.get("/healthz").status_code == 200


def test_bad_json_and_internal_error_keep_the_server_alive(server):
    r = server.client.post("/embed", content=b'{"text": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body" and "not valid JSON" in r.json()["error"]
    r = server.client.post("/classify", json={"texts": ["好", FAULT]})
    assert r.status_code == 500
    err = r.json()   # no exception text for the client: the id, whose log line has it
    assert "injected" not in err["error"] and "RuntimeError" not in r.text
    assert err["request_id"] == r.headers["x-request-id"]
    assert f"request {err['request_id']}" in server.log.read_text(errors="replace")
    assert server.client.post("/classify", json={"text": "好"}).status_code == 200
    assert server.client.get("/healthz").status_code == 200
    assert server.metric("miniroberta_requests_total", endpoint="/classify", status="500") >= 1


def _burst(server, n: int) -> tuple[list, float, float]:
    """n simultaneous one-text /classify requests; (responses, model calls, items) they caused."""
    before_calls = server.metric("miniroberta_batch_size_count", endpoint="classify")
    before_items = server.metric("miniroberta_batch_size_sum", endpoint="classify")
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            barrier.wait(30)
            results[i] = c.post("/classify", json={"text": "好的一是在"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return (results, server.metric("miniroberta_batch_size_count", endpoint="classify") - before_calls,
            server.metric("miniroberta_batch_size_sum", endpoint="classify") - before_items)


def test_concurrent_requests_are_batched(server):
    """24 simultaneous one-text requests: fewer model calls than requests, all answered alike
    (up to 3 bursts, in case a loaded machine delivers one burst one by one)."""
    n = 24
    for _ in range(3):
        results, calls, items = _burst(server, n)
        assert all(r is not None and r.status_code == 200 for r in results)
        assert len({r.json()["results"][0]["label"] for r in results}) == 1
        assert items == n
        if calls < n:
            break
    assert calls < n, f"{n} concurrent requests ran as {calls} model calls"
    assert server.metric("miniroberta_requests_total", endpoint="/classify", status="200") >= n
    assert server.metric("miniroberta_request_duration_seconds_count", endpoint="/classify") >= n


def _curl_calls(path: Path) -> list[tuple[str, str]]:
    return re.findall(r"curl -s localhost:8000(/[\w-]+) -H '[^']*' -d '([^']*)'", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", ["README.md", "docs/serve.md"])
def test_documented_curl_calls_work(server, doc):
    """The curl examples of the README and docs/serve.md, sent to the server as written."""
    calls = _curl_calls(ROOT / doc)
    assert len(calls) >= 3
    for path, body in calls:
        r = server.client.post(path, content=body.encode("utf-8"), headers={"content-type": "application/json"})
        assert r.status_code == 200, (path, body, r.text)
        assert "results" in r.json() or "embeddings" in r.json()
    assert "miniroberta_batch_size_bucket" in server.client.get("/metrics").text


def test_sigterm_drains_in_flight_request_and_exits_0(models):
    s = Server(["--onnx", str(models["onnx"])], models["dir"] / "sigterm.log")
    try:
        body = json.dumps({"text": "好的一是在"}).encode()
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        # headers and half the body: the request is in flight until the rest arrives
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
        for _ in range(300):
            if s.metric("miniroberta_requests_in_flight", endpoint="/classify") == 1:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the request never showed as in flight")
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert s.proc.poll() is None, "exited before the in-flight request finished"
        sock.sendall(body[5:])
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        sock.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert json.loads(data.split(b"\r\n\r\n", 1)[1])["results"][0]["label"] in ("0", "1")
        assert s.proc.wait(30) == 0
    finally:
        s.stop()
