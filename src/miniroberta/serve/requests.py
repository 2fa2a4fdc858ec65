"""Request bodies of ``miniroberta serve``: parsed, type-checked and bounded before any model work.

Each endpoint's body is read by ``parse_body`` (JSON, an object) and checked field by field here, by hand
rather than by a schema library: every problem becomes one ``RequestError`` naming the field
(``texts[3]``), and the limit when a bound was passed (``ServeLimits``) -- 422 for a malformed body,
413 for too much work, 400 for input the model cannot take. A text that cannot be encoded as UTF-8 (a
lone surrogate such as ``"\\ud800"`` is legal JSON) is refused here, so it never reaches a batch of
other clients' texts. Fill-mask texts are tokenized here once (``encode_fill_mask``) to count their
masks and candidates; the batch runs on those ids.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from miniroberta.infer.backends import HeadInfo
from miniroberta.infer.pipelines import encode_fill_mask
from miniroberta.modeling.tokenizer import BertTokenizer
from miniroberta.serve.config import ServeLimits

POOLINGS = ("cls", "mean")


class RequestError(Exception):
    """A request refused with ``status``; the JSON error names ``field`` and ``limit`` when known."""

    def __init__(self, status: int, message: str, field: str | None = None, limit: str | None = None,
                 value: Any = None, headers: Sequence[tuple[bytes, bytes]] = (), **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.limit, self.value = status, message, field, limit, value
        self.headers, self.extra = list(headers), extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.limit is not None:
            out["limit"] = self.limit
            out["value"] = self.value
        out.update(self.extra)
        return out


@dataclass
class Parsed:
    """One request's items (texts or pairs) and its options."""
    items: list[Any]
    top_k: int = 5
    pooling: str = "cls"


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body; 422 naming the body (never a byte offset as the field)."""
    try:
        obj = json.loads(body)
    except RecursionError:
        raise RequestError(422, "the body is nested too deeply to be a request", field="body") from None
    except UnicodeDecodeError:
        raise RequestError(422, "the body is not UTF-8 encoded JSON", field="body") from None
    except json.JSONDecodeError as e:
        raise RequestError(422, f"the body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})",
                           field="body") from None
    except ValueError as e:   # e.g. an integer with more digits than Python converts
        raise RequestError(422, f"the body is not valid JSON ({str(e)[:120]})", field="body") from None
    if not isinstance(obj, dict):
        raise RequestError(422, f"the body must be a JSON object, got {_kind(obj)}", field="body")
    return obj


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _check_keys(obj: dict[str, Any], allowed: Sequence[str]) -> None:
    for k in obj:
        if k not in allowed:
            name = k if 0 < len(k) <= 40 and k.isprintable() else repr(k[:40])
            raise RequestError(422, f"unknown field {name}; this endpoint takes {', '.join(allowed)}", field=name)


def check_text(s: Any, name: str, limits: ServeLimits, chars: int = 0) -> int:
    """The length of ``s`` (a string of at most ``max_chars`` - ``chars`` characters that UTF-8 can encode)."""
    if not isinstance(s, str):
        raise RequestError(422, f"{name} must be a string, got {_kind(s)}", field=name)
    n = len(s) + chars
    if n > limits.max_chars:
        what = f"{name} has {n} characters" if not chars else f"the pair ending in {name} has {n} characters"
        raise RequestError(413, f"{what}; the limit is --max_chars {limits.max_chars}",
                           field=name, limit="max_chars", value=limits.max_chars)
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RequestError(422, f"{name} has a lone surrogate (U+{ord(s[e.start]):04X}) at character {e.start}: "
                                    f"not text; encode the text as UTF-8 JSON", field=name) from None
    return n


def _one_or_many(obj: dict[str, Any], limits: ServeLimits, extra: str = "") -> list[Any]:
    text, texts = obj.get("text"), obj.get("texts")
    if (text is None) == (texts is None):
        raise RequestError(422, f"give exactly one of 'text' (a string{extra}) or 'texts' (a list)",
                           field="texts" if text is not None else "text")
    if text is not None:
        return [text]
    if not isinstance(texts, list):
        raise RequestError(422, f"texts must be a list, got {_kind(texts)}", field="texts")
    if not texts:
        raise RequestError(422, "texts is empty", field="texts")
    if len(texts) > limits.max_items:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is --max_items {limits.max_items}",
                           field="texts", limit="max_items", value=limits.max_items)
    return texts


def item_names(obj: dict[str, Any], n: int) -> list[str]:
    """How errors call the items of a request: ``text``, or ``texts[i]``."""
    return ["text"] if "text" in obj and obj["text"] is not None else [f"texts[{i}]" for i in range(n)]


def parse_texts(obj: dict[str, Any], limits: ServeLimits, allowed: Sequence[str]) -> list[str]:
    """``text`` or ``texts``: checked strings."""
    _check_keys(obj, allowed)
    items = _one_or_many(obj, limits)
    for it, name in zip(items, item_names(obj, len(items))):
        check_text(it, name, limits)
    return items


def parse_fill_mask(obj: dict[str, Any], limits: ServeLimits) -> Parsed:
    items = parse_texts(obj, limits, ("text", "texts", "top_k"))
    top_k = obj.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise RequestError(422, f"top_k must be an integer, got {_kind(top_k)}", field="top_k")
    if top_k < 1:
        raise RequestError(422, f"top_k must be >= 1, got {top_k}", field="top_k")
    if top_k > limits.max_top_k:
        raise RequestError(422, f"top_k {top_k} is larger than this server allows (--max_top_k {limits.max_top_k})",
                           field="top_k", limit="max_top_k", value=limits.max_top_k)
    return Parsed(items, top_k=top_k)


def parse_embed(obj: dict[str, Any], limits: ServeLimits) -> Parsed:
    items = parse_texts(obj, limits, ("text", "texts", "pooling"))
    pooling = obj.get("pooling", "cls")
    if pooling not in POOLINGS:
        shown = pooling if isinstance(pooling, str) and len(pooling) <= 20 else _kind(pooling)
        raise RequestError(422, f"pooling must be one of {', '.join(POOLINGS)}, got {shown!r}", field="pooling")
    return Parsed(items, pooling=pooling)


def parse_classify(obj: dict[str, Any], limits: ServeLimits) -> Parsed:
    """``text`` (+ ``text_pair``) or ``texts``: strings and ``[text, text_pair]`` lists."""
    _check_keys(obj, ("text", "text_pair", "texts"))
    pair = obj.get("text_pair")
    if pair is not None and obj.get("texts") is not None:
        raise RequestError(422, "'text_pair' goes with 'text'; in 'texts' write pairs as [text, text_pair]",
                           field="text_pair")
    items = _one_or_many(obj, limits, extra=", with an optional 'text_pair'")
    out: list[Any] = []
    for it, name in zip(items, item_names(obj, len(items))):
        if isinstance(it, list) and name != "text":
            if len(it) != 2:
                raise RequestError(422, f"{name} has {len(it)} entries; a pair is [text, text_pair]", field=name)
            n = check_text(it[0], f"{name}[0]", limits)
            check_text(it[1], f"{name}[1]", limits, chars=n)
            out.append((it[0], it[1]))
        elif name == "text" and pair is not None:
            n = check_text(it, "text", limits)
            check_text(pair, "text_pair", limits, chars=n)
            out.append((it, pair))
        else:
            if not isinstance(it, str):
                what = "a string" if name == "text" else "a string or a [text, text_pair] list"
                raise RequestError(422, f"{name} must be {what}, got {_kind(it)}", field=name)
            check_text(it, name, limits)
            out.append(it)
    return Parsed(out)


def encode_fill_mask_checked(tok: BertTokenizer, req: Parsed, info: HeadInfo, limits: ServeLimits,
                             names: Sequence[str]) -> list[list[int]]:
    """The ids the fill-mask batch runs on; 400 for a text without [MASK] or longer than the model takes,
    413 for more masks than ``max_masks`` or more candidates than ``max_results``."""
    try:
        encoded = encode_fill_mask(tok, req.items, info.max_length, names)
    except ValueError as e:
        name = str(e).split(" ", 1)[0]
        raise RequestError(400, str(e)[:300], field=name if name in names else None) from None
    k = min(req.top_k, info.vocab_size)
    total = 0
    for ids, name in zip(encoded, names):
        masks = ids.count(tok.mask_id)
        if masks > limits.max_masks:
            raise RequestError(413, f"{name} has {masks} [MASK] tokens; the limit is --max_masks {limits.max_masks}",
                               field=name, limit="max_masks", value=limits.max_masks)
        total += masks * k
    if total > limits.max_results:
        raise RequestError(413, f"this request asks for {total} candidates (texts x masks x top_k); the limit is "
                                f"--max_results {limits.max_results}: lower top_k or send fewer texts",
                           field="top_k", limit="max_results", value=limits.max_results)
    return encoded


__all__ = ["RequestError", "Parsed", "parse_body", "parse_fill_mask", "parse_embed", "parse_classify",
           "encode_fill_mask_checked", "item_names", "check_text", "POOLINGS"]
