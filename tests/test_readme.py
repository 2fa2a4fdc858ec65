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
