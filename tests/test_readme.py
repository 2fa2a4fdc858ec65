"""The README's command lines are real: each `miniroberta ...` line parses with that command's parser,
and the set-up names the test command that .ci/run runs."""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from miniroberta.cli import COMMANDS, normalize_argv

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _command_lines(path: Path) -> list[str]:
    lines = []
    for block in _bash_blocks(path.read_text(encoding="utf-8")):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("miniroberta "):
                    lines.append(part)
    return lines


def _parse(line: str) -> argparse.Namespace:
    argv = shlex.split(line.replace("$D", "../shared/data"))[1:]
    name = argv[0]
    assert name in COMMANDS, f"README uses unknown command {name!r}"
    mod_name, conf, _, _ = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"miniroberta {name}", exit_on_error=False)
    getattr(importlib.import_module(mod_name), conf)(parser)
    return parser.parse_args(normalize_argv(argv[1:]))


README_LINES = _command_lines(ROOT / "README.md")
DOC_LINES = [l for d in sorted((ROOT / "docs").glob("*.md")) for l in _command_lines(d)]


def test_readme_has_commands():
    names = {shlex.split(l)[1] for l in README_LINES}
    assert {"quickstart", "preprocess", "pretrain", "convert", "grid", "report", "reproduce"} <= names


@pytest.mark.parametrize("line", README_LINES)
def test_readme_command_parses(line):
    _parse(line)


@pytest.mark.parametrize("line", DOC_LINES)
def test_docs_command_parses(line):
    _parse(line)


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in readme
    assert "python -m pytest -q" in ci
    assert 'pip install -q -e ".[test]"' in ci and 'pip install -e ".[test]"' in readme


DATA = ROOT.parent / "shared" / "data"


def _python_api_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def _shrink(code: str, data: Path) -> str:
    """The README's example at a test's budget: each replacement must apply (a README edit fails here first)."""
    subs = [('D = "../shared/data"', f"D = {str(data)!r}"),
            ('"ds_seq128")', '"ds_seq128", max_bytes=300_000, progress=False)'),
            ("total_steps=2000", "total_steps=30, progress=False"),
            ('"ckpt/model.bin-2000"', '"ckpt/model.bin-30"'),
            ('output_dir="runs/chnsenticorp")',
             'output_dir="runs/chnsenticorp", max_train_examples=64, max_dev_examples=64, epochs_num=1, '
             'run_test=False, progress=False)')]
    for old, new in subs:
        assert code.count(old) == 1, f"the README's Python API example no longer has {old!r}: update this test"
        code = code.replace(old, new)
    return code


@pytest.mark.skipif(not (DATA / "corpus" / "cluecorpussmall_sampled.txt").is_file()
                    or not (DATA / "tasks" / "chnsenticorp").is_dir(), reason="../shared/data is not present")
def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    """Every line of the README's Python API example runs as written (smaller budgets), and what its comments say
    each call returns is what it returns."""
    import torch

    from miniroberta.interop.checkpoint import save_native
    from miniroberta.interop.export import export_checkpoint
    from miniroberta.modeling.bert import build_mlm
    from miniroberta.modeling.config import preset

    vocab = DATA / "vocab" / "google_zh_vocab.txt"
    monkeypatch.chdir(tmp_path)
    cfg = preset("tiny")                     # stands in for the quickstart's model (same shape, random weights)
    save_native(str(tmp_path / "qs.bin"), build_mlm(cfg, seed=0).state_dict(), cfg, {"step": 0})
    export_checkpoint(str(tmp_path / "qs.bin"), "quickstart_out/hf_model", vocab_path=str(vocab), type="mlm")
    ns: dict = {}
    torch_threads = torch.get_num_threads()
    try:
        exec(compile(_shrink(_python_api_block(), DATA), "README.md:Python API", "exec"), ns)
    finally:
        torch.set_num_threads(torch_threads)
    top = ns["fill_mask"]("quickstart_out/hf_model", "中国的首都是[MASK]京。", top_k=3)
    assert len(top) == 3 and set(top[0]) == {"score", "token", "token_str", "sequence"}
    assert ns["embed"]("quickstart_out/hf_model", ["今天天气很好"], pooling="mean").shape == (1, 128)
    assert isinstance(ns["result"], dict)
    labels = ns["classify"]("runs/chnsenticorp", ["这家酒店很好", "服务太差了"])
    assert len(labels) == 2 and {"label", "score", "scores"} <= set(labels[0])
    assert (tmp_path / "hf_tiny" / "config.json").is_file()
