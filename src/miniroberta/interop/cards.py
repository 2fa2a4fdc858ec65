"""Model cards ready for a model hub, generated from measured results -- the one place cards are written.

Three kinds, one layout (YAML front matter, then Markdown):

* :func:`export_card` -- ``convert`` / ``export_checkpoint``: size, what the checkpoint records about its
  training (labelled, never a raw key or a local path), optional fine-tuning scores;
* :func:`study_card` -- ``reproduce``: the model's score row with its † ‡ flags and the no-pretraining row of the
  same grid beside it, the training data and budget of each stage, the parity check;
* :func:`classifier_card` -- a fine-tuned classifier: the task, its label names with their meaning, the train
  subsample, dev scores, the base model.

The front matter holds ``language: zh``, ``license``, ``library_name`` (transformers: every export loads with
``from_pretrained``), ``pipeline_tag`` (fill-mask, text-classification or feature-extraction), ``tags``,
``datasets`` and a ``model-index`` with the dev scores (a flag is kept as text in the metric's name; the
footnotes under the table say what it means). Cards never hold a local path: a path is cut to its last
component (``public_text``) and path-valued checkpoint facts are left out. The YAML is written by hand (no
YAML library needed): block style, every string double-quoted (JSON escapes are valid YAML).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

from miniroberta.data.tasks import default_data_dir
from miniroberta.modeling.config import ModelConfig

LICENSE = "apache-2.0"
LIBRARY = "transformers"
TAGS = ("bert", "roberta", "chinese", "miniroberta")
ARCHITECTURES = {"mlm": "BertForMaskedLM", "bert": "BertForPreTraining", "cls": "BertForSequenceClassification",
                 "encoder": "BertModel"}
PIPELINE_TAGS = {"mlm": "fill-mask", "bert": "fill-mask", "cls": "text-classification", "encoder": "feature-extraction"}

# the scored tasks: a readable name, the dataset id in the card (CLUE's tasks as configs of `clue`), the
# meaning of labels where the data files do not say it (tnews and iflytek ship labels.json)
TASK_CARDS: dict[str, dict[str, Any]] = {
    "book_review": dict(name="Douban book review sentiment", dataset="book_review",
                        labels={"0": "negative", "1": "positive"}),
    "chnsenticorp": dict(name="ChnSentiCorp sentiment", dataset="chnsenticorp",
                         labels={"0": "negative", "1": "positive"}),
    "lcqmc": dict(name="LCQMC question matching", dataset="lcqmc",
                  labels={"0": "different intent", "1": "same intent"}),
    "tnews": dict(name="TNEWS news title classification (CLUE)", dataset="clue", config="tnews"),
    "iflytek": dict(name="IFLYTEK app description classification (CLUE)", dataset="clue", config="iflytek"),
    "ocnli": dict(name="OCNLI natural language inference (CLUE)", dataset="clue", config="ocnli",
                  labels={"entailment": "the hypothesis follows from the premise",
                          "neutral": "neither follows nor contradicts",
                          "contradiction": "the hypothesis contradicts the premise"}),
}
FLAG_NOTES = {"†": "trained on a deterministic subsample of the train set (a compute budget) or scored on a dev "
                   "subsample; comparable within the study, not with full-data scores",
              "‡": "iflytek is trained on the partial FewCLUE-derived train set (4,529 of the official 12,133 "
                   "examples); not comparable to a full-train score"}

METRIC_NAMES = {"accuracy": "accuracy", "f1": "macro-F1"}

_ABS_PATH = re.compile(r"(?<![\w.~/:])/(?:[^\s/|,;()'\"]+/)+([^\s/|,;()'\"]+)")


def public_text(v: str) -> str:
    """``v`` with every absolute local path cut to its last component (a model card is published; where
    the files lay on the machine that wrote it is private and useless elsewhere)."""
    return _ABS_PATH.sub(r"\1", v)


# ------------------------------------------------------------------ YAML front matter
def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(round(v, 4)) if isinstance(v, float) else str(v)
    return json.dumps(str(v), ensure_ascii=False)


def _yaml(v: Any, indent: int = 0) -> list[str]:
    """Block-style YAML lines of a dict/list of scalars (the value part; the caller writes the key)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                lines.append(f"{pad}{k}:")
                lines += _yaml(x, indent + 2)
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(x) if not isinstance(x, (dict, list)) else '[]'}")
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, dict):
                sub = _yaml(x, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_yaml_scalar(x)}")
    return lines


def front_matter(meta: dict[str, Any]) -> str:
    return "\n".join(["---", *_yaml(meta), "---"])


# ------------------------------------------------------------------ scores
@dataclass
class Score:
    """A dev score of a model on a task (accuracy in %); ``flags``: † and/or ‡ (see ``FLAG_NOTES``)."""
    task: str
    value: float
    flags: str = ""
    metric: str = "accuracy"


def _percent(v: float) -> float:
    return float(v) * 100 if float(v) <= 1.0 else float(v)


def scores_from(values: dict[str, float] | None, details: dict[str, dict[str, Any]] | None = None,
                percent: bool | None = None) -> list[Score]:
    """``Score``s from ``task -> accuracy`` (``percent``: True, False for fractions, None to guess per value)
    and per-task details (``subsampled`` -> †, a ``note`` on iflytek -> ‡), as the grid and the report record
    them."""
    out = []
    for t, v in (values or {}).items():
        d = (details or {}).get(t) or {}
        flags = ("†" if d.get("subsampled") else "") + ("‡" if t == "iflytek" and d.get("note") else "")
        out.append(Score(t, _percent(v) if percent is None else float(v) * (1 if percent else 100), flags))
    return out


def model_index(name: str, scores: Sequence[Score], split: str = "validation") -> list[dict[str, Any]]:
    """The ``model-index`` of a card: one result per task with its dev metric; flags kept as text."""
    by_task: dict[str, dict[str, Any]] = {}
    for s in scores:
        if s.task not in by_task:
            info = TASK_CARDS.get(s.task, {"name": s.task, "dataset": s.task})
            dataset = {"type": info["dataset"], "name": info["name"], "split": split}
            if info.get("config"):
                dataset["config"] = info["config"]
            by_task[s.task] = {"task": {"type": "text-classification", "name": "Text Classification"},
                               "dataset": dataset, "metrics": []}
        label = f"dev {METRIC_NAMES.get(s.metric, s.metric)} (%)" + (f" {s.flags}" if s.flags else "")
        by_task[s.task]["metrics"].append({"type": s.metric, "value": round(s.value, 2), "name": label})
    return [{"name": name, "results": list(by_task.values())}] if by_task else []


def datasets_of(tasks: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in tasks:
        d = TASK_CARDS.get(t, {"dataset": t})["dataset"]
        if d not in out:
            out.append(d)
    return out


def _meta(pipeline_tag: str, tasks: Sequence[str], name: str, scores: Sequence[Score],
          extra_tags: Sequence[str] = ()) -> dict[str, Any]:
    meta: dict[str, Any] = {"language": "zh", "license": LICENSE, "library_name": LIBRARY,
                            "pipeline_tag": pipeline_tag, "tags": [*TAGS, *extra_tags]}
    if tasks:
        meta["datasets"] = datasets_of(tasks)
    idx = model_index(name, scores)
    if idx:
        meta["model-index"] = idx
    return meta


def score_table(rows: Sequence[tuple[str, Sequence[Score]]], tasks: Sequence[str]) -> list[str]:
    """A Markdown table, one row per (name, scores), a column per task; flags after the value."""
    lines = ["| model | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, scores in rows:
        by = {s.task: s for s in scores}
        cells = [f"{by[t].value:.1f}{by[t].flags}" if t in by else "–" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    flags = sorted({f for _, sc in rows for s in sc for f in s.flags})
    if flags:
        lines += [""] + [f"{f} {FLAG_NOTES[f]}." for f in flags if f in FLAG_NOTES]
    return lines


# ------------------------------------------------------------------ common sections
def size_section(config: ModelConfig, type: str) -> list[str]:
    params = config.num_parameters(mlm_head=type in ("mlm", "bert"), pooler=type in ("bert", "cls"))
    enc = config.num_parameters(mlm_head=False, pooler=False)
    lines = ["## Size", "",
             "| layers | hidden | heads | FFN | vocab | max positions | parameters (total) | parameters (encoder) |",
             "|---|---|---|---|---|---|---|---|",
             f"| {config.num_hidden_layers} | {config.hidden_size} | {config.num_attention_heads} | "
             f"{config.intermediate_size} | {config.vocab_size} | {config.max_position_embeddings} | "
             f"{params / 1e6:.1f}M | {enc / 1e6:.1f}M |", "",
             f"Tokenizer: `BertTokenizer` (WordPiece, Chinese characters split) over the folder's `vocab.txt` "
             f"({config.vocab_size:,} tokens).", ""]
    if config.layer_norm_type == "uer":
        lines += ["Trained with UER-py's LayerNorm (`gamma*(x-mean)/(std+eps)+beta`, unbiased std, eps 1e-6); "
                  "transformers runs the standard LayerNorm, so its outputs differ slightly from miniroberta's.", ""]
    return lines


def usage_section(type: str) -> list[str]:
    if type in ("mlm", "bert"):
        lines = ["## Usage", "", "```python", "from transformers import pipeline",
                 "unmasker = pipeline('fill-mask', model='PATH/TO/THIS/DIR')",
                 "unmasker('中国的首都是[MASK]京。')", "```", "",
                 "or `miniroberta fill-mask --model PATH/TO/THIS/DIR \"中国的首都是[MASK]京。\"`.", ""]
        if type == "mlm":
            lines += ["This export has no pooler (like the UER-py `--type mlm` conversion): "
                      "`BertModel.from_pretrained` initialises `pooler.dense` randomly and reports the MLM head "
                      "(`cls.*`) as unused.", ""]
        return lines
    return ["## Usage", "", "```python", "from transformers import pipeline",
            "classify = pipeline('text-classification', model='PATH/TO/THIS/DIR')",
            "classify('这家酒店的服务很好。')", "```", "",
            "or `miniroberta predict --model PATH/TO/THIS/DIR ...`.", ""]


def use_section(kind: str) -> list[str]:
    """Intended use and limitations (``encoder`` for pretrained exports, ``classifier`` for fine-tuned ones)."""
    if kind == "classifier":
        use = ("Classifying Chinese texts of the task it was fine-tuned on, as a baseline or a compact model for "
               "CPU serving.")
    else:
        use = ("A compact Chinese encoder to fine-tune on classification or matching tasks, to embed texts "
               "(`miniroberta embed`) or to fill masks; a student for distillation.")
    return ["## Intended use and limitations", "", use, "",
            "* Simplified Chinese text (BERT's Chinese vocabulary; a text is at most 512 tokens, the scores are at "
            "128).",
            "* A small model trained on a small budget: it is weaker than the large Chinese encoders; check it on "
            "your own data before relying on it.",
            "* The training text is web, news and review text: it carries their biases and topics; nothing was "
            "filtered for harmful content.",
            "* Not for decisions about people, and not a source of facts (fill-mask completions are guesses).", ""]


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return public_text(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10000:
        return f"{v:,}"
    return str(v)


def facts_table(rows: Sequence[tuple[str, Any]], intro: str) -> list[str]:
    if not rows:
        return ["The checkpoint records no training information.", ""]
    return [intro, "", "| | |", "|---|---|", *[f"| {a} | {_fmt(b).replace('|', '/')} |" for a, b in rows], ""]


def render(meta: dict[str, Any], title: str, intro: str, sections: Sequence[Sequence[str]]) -> str:
    lines = [front_matter(meta), "", f"# {title}", "", intro, ""]
    for s in sections:
        lines += list(s)
    return public_text("\n".join(lines).rstrip() + "\n")


# ------------------------------------------------------------------ the export card
# checkpoint facts rendered (in this order, under these labels) when present; anything else is left out:
# a raw key says nothing to a reader, and path-valued facts (the dataset folder, the initial weights, the
# teacher, the file converted from) name the writer's machine
CARD_KEYS = (
    ("corpus", "Training corpus"), ("dataset", "Dataset"), ("stage", "Stage"), ("seq_length", "Sequence length"),
    ("step", "Steps"), ("steps", "Steps"), ("total_steps", "Total steps"), ("batch_size", "Batch size"),
    ("tokens", "Tokens seen"), ("tokens_seen", "Tokens seen"), ("real_tokens", "Real (non-pad) tokens seen"),
    ("loss", "Final MLM loss"), ("final_loss", "Final MLM loss"), ("mlm_loss", "Final MLM loss"),
    ("mlm_acc", "Final MLM accuracy"), ("accuracy", "Final MLM accuracy"),
    ("eval_loss", "Held-out MLM loss"), ("eval_mlm_acc", "Held-out MLM accuracy"),
    ("learning_rate", "Learning rate"), ("mask_rate", "Mask rate"), ("init", "Initialisation"),
    ("precision", "Precision"), ("seed", "Seed"), ("vocab_sha256", "Vocab SHA-256"),
    ("stage1", "Stage 1"), ("stage2", "Stage 2"), ("parity_vs_transformers", "Parity with transformers"),
    ("recipe", "Recipe"), ("generated_by", "Generated by"),
)
_PATH_VALUED = {"dataset_path", "corpus_path", "pretrained_from", "teacher", "converted_from", "vocab_path",
                "pretrained_model_path", "output_model_path"}


def checkpoint_facts(meta: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) rows of what a checkpoint's meta records, labelled; no raw key, no local path."""
    rows, seen = [], set()
    for key, label in CARD_KEYS:
        v = meta.get(key)
        if key in meta and label not in seen and isinstance(v, (str, int, float)) and not isinstance(v, bool):
            if key == "dataset" and isinstance(v, str):
                v = os.path.basename(v.rstrip("/\\"))
            rows.append((label, v))
            seen.add(label)
    if meta.get("pretrained_from"):
        rows.append(("Initialised from", "an earlier checkpoint (weights only)"))
    if meta.get("teacher"):
        rows.append(("Distilled from", "a teacher model (MLM distillation)"))
    if meta.get("source_format") == "uer":
        rows.append(("Converted from", f"UER-py checkpoint ({meta.get('uer_vintage', '?')} key names)"))
    return rows


def export_card(config: ModelConfig, meta: dict[str, Any] | None = None, scores: dict[str, float] | None = None,
                type: str = "mlm", name: str | None = None, extra: str | None = None,
                tasks_details: dict[str, dict[str, Any]] | None = None) -> str:
    """The card of an HF export (``convert``, ``export_checkpoint``): size, the checkpoint's labelled training
    facts, optional fine-tuning ``scores`` (task -> dev accuracy, fraction or percent) and a usage snippet."""
    meta = dict(meta or {})
    title = public_text(name or f"miniroberta {config.name}")
    sc = scores_from(scores, tasks_details)
    front = _meta(PIPELINE_TAGS.get(type, "fill-mask"), [s.task for s in sc], title, sc)
    intro = (f"A Chinese BERT/RoBERTa encoder ({config.num_hidden_layers} layers, hidden size {config.hidden_size}) "
             f"exported by miniroberta as a HuggingFace `{ARCHITECTURES.get(type, 'BertForMaskedLM')}`.")
    sections = [size_section(config, type),
                ["## Training", "", *facts_table(checkpoint_facts(meta), "As recorded in the checkpoint:")]]
    if sc:
        sections.append(["## Fine-tuning (dev accuracy, %)", "", *score_table([(title, sc)], [s.task for s in sc]), ""])
    sections += [use_section("encoder"), usage_section(type)]
    if extra:
        sections.append([extra.rstrip(), ""])
    return render(front, title, intro, sections)


# ------------------------------------------------------------------ the study card
def study_card(config: ModelConfig, name: str, facts: Sequence[tuple[str, Any]], scores: Sequence[Score],
               baseline: Sequence[Score] = (), type: str = "mlm", training: Sequence[str] = (),
               extra: str | None = None) -> str:
    """The card ``reproduce`` writes into an export: the model's dev scores with their † ‡ flags in the
    model-index and in a table beside the no-pretraining row of the same grid (``baseline``: the same
    architecture from random initialisation), then the training data and budget (``facts``, ``training``)."""
    tasks = [s.task for s in scores] + [s.task for s in baseline if s.task not in {x.task for x in scores}]
    front = _meta(PIPELINE_TAGS.get(type, "fill-mask"), tasks, name, scores)
    intro = (f"A Chinese BERT/RoBERTa encoder ({config.num_hidden_layers} layers, hidden size {config.hidden_size}) "
             f"pretrained with masked-language modelling by `miniroberta reproduce` and exported as a HuggingFace "
             f"`{ARCHITECTURES.get(type, 'BertForMaskedLM')}`. Every number below was measured by that run.")
    sections = [size_section(config, type)]
    if scores:
        rows = [(name, scores)] + ([(f"{config.name} · no pretraining", baseline)] if baseline else [])
        head = ["## Fine-tuning (dev accuracy, %)", "",
                "The best setting of the study's fine-tuning grid per task (best epoch, selected on dev)"
                + ("; the no-pretraining row is the same architecture from random initialisation, fine-tuned with "
                   "the same grid, data and seeds -- the difference is what the pretraining bought." if baseline
                   else "."), ""]
        sections.append(head + score_table(rows, tasks) + [""])
    sections.append(["## Training data and budget", "", *training,
                     *facts_table(facts, "As measured by the study:")])
    sections += [use_section("encoder"), usage_section(type)]
    if extra:
        sections.append([extra.rstrip(), ""])
    return render(front, name, intro, sections)


# ------------------------------------------------------------------ the classifier card
def label_meanings(task: str | None, labels: Sequence[str], data_dir: str | None = None) -> dict[str, str]:
    """What each label means: the task's ``labels.json`` in the data folder (tnews, iflytek), else the
    meanings known for the task (sentiment 0/1, lcqmc, ocnli); labels without one are left out."""
    known: dict[str, str] = dict((TASK_CARDS.get(task or "", {}).get("labels")) or {})
    if task:
        path = os.path.join(data_dir or default_data_dir(), task, "labels.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        d = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    desc = d.get("label_desc") or d.get("label_des")
                    if isinstance(d, dict) and "label" in d and desc:
                        known[str(d["label"])] = str(desc)
    return {str(lab): known[str(lab)] for lab in labels if str(lab) in known}


def classifier_card(config: ModelConfig, task: str, labels: Sequence[str], *, dev_accuracy: float | None = None,
                    dev_macro_f1: float | None = None, n_train: int | None = None, n_train_total: int | None = None,
                    n_dev: int | None = None, n_dev_total: int | None = None, base_model: str | None = None,
                    pretrained: bool = True, settings: dict[str, Any] | None = None,
                    meanings: dict[str, str] | None = None, data_dir: str | None = None, name: str | None = None,
                    note: str = "") -> str:
    """The card of a fine-tuned classifier. ``labels``: the class names in id order; ``meanings``: what each
    means (default: :func:`label_meanings`); ``n_train`` of ``n_train_total`` train examples (a subsample
    is said, and flags the score †); ``dev_accuracy``/``dev_macro_f1`` as fractions or percent;
    ``base_model``: the pretrained model's name (no path), ``pretrained=False`` for random initialisation;
    ``settings``: epochs, batch size, learning rate, seq length, seed ... ; ``note``: the task's caveat (‡)."""
    title = public_text(name or f"{config.name} fine-tuned on {task}")
    meanings = label_meanings(task, labels, data_dir) if meanings is None else meanings
    sub = bool(n_train and n_train_total and n_train < n_train_total) or bool(n_dev and n_dev_total and n_dev < n_dev_total)
    flags = ("†" if sub else "") + ("‡" if note and task == "iflytek" else "")
    scores = [Score(task, _percent(dev_accuracy), flags)] if dev_accuracy is not None else []
    if dev_macro_f1 is not None:
        scores.append(Score(task, _percent(dev_macro_f1), flags, metric="f1"))
    front = _meta("text-classification", [task], title, scores, extra_tags=("text-classification", task))
    info = TASK_CARDS.get(task, {"name": task})
    intro = (f"A `BertForSequenceClassification` ({config.num_hidden_layers} layers, hidden size "
             f"{config.hidden_size}, {len(labels)} classes) fine-tuned by `miniroberta finetune` on "
             f"{info['name']}, from " + (f"the pretrained `{public_text(base_model)}`." if pretrained and base_model
                                        else "pretrained weights." if pretrained else "random initialisation "
                                        "(no pretraining)."))
    label_rows = ["## Labels", "", "| id | label | meaning |", "|---|---|---|",
                  *[f"| {i} | {lab} | {meanings.get(str(lab), '')} |" for i, lab in enumerate(labels)], ""]
    data = ["## Training data", ""]
    if n_train is not None:
        data.append(f"* train: {n_train:,} examples" + (f" of {n_train_total:,} (a deterministic subsample: a compute "
                                                         f"budget, marked †)" if sub and n_train_total else ""))
    if n_dev is not None:
        data.append(f"* dev (scored): {n_dev:,} examples" + (f" of {n_dev_total:,}" if n_dev_total else ""))
    if note:
        data.append(f"* {note}")
    data += [f"* {k.replace('_', ' ')}: {_fmt(v)}" for k, v in (settings or {}).items()
             if isinstance(v, (str, int, float)) and k not in _PATH_VALUED] + [""]
    sections: list[Sequence[str]] = [label_rows, data]
    if scores:
        sections.append(["## Results (dev set, %)", "", *score_table([(title, scores[:1])], [task]),
                         *(["", f"Macro-F1: {scores[1].value:.1f}"] if len(scores) > 1 else []), ""])
    sections += [size_section(config, "cls"), use_section("classifier"), usage_section("cls")]
    return render(front, title, intro, sections)


__all__ = ["export_card", "study_card", "classifier_card", "label_meanings", "model_index", "front_matter",
           "Score", "scores_from", "public_text", "checkpoint_facts", "TASK_CARDS", "FLAG_NOTES", "PIPELINE_TAGS",
           "LICENSE"]
