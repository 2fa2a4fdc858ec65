"""MLM masking as a pure function of (seed, epoch, instance index), vectorised per batch.

Every random number a mask uses is a counter-based hash (splitmix64) of
``(seed, mask_epoch, instance_index, position, stream)``; there is no generator state. Hence
the mask of an instance is the same whichever process, batch or world size it lands in, and
a resumed run reproduces exactly the masks an uninterrupted run would have drawn.

Semantics (reference = UER-py ``uer/utils/mask.py``; see docs/pretrain.md):

* budget ``k = max(1, round(mask_rate * n))`` where ``n`` counts every non-padding token of
  the instance *including* ``[CLS]``/``[SEP]`` (as the reference), capped at the number of
  candidates. Rounding is Python's ``round`` (half to even), as the reference.
* candidates: every position that is not ``[CLS]``, ``[SEP]`` or ``[PAD]``.
* plain masking: the ``k`` candidates with the smallest hash keys (a uniform random subset).
* each chosen token (or each chosen word / span, see below) becomes ``[MASK]`` with p=0.8,
  a random *ordinary* token with p=0.1, or stays unchanged with p=0.1. Ordinary tokens are
  the vocab entries that are neither the five special tokens nor bracketed placeholders like
  ``[unused1]`` -- a deliberate deviation: the reference draws from ``[1, V-1]`` minus
  CLS/SEP/MASK and so can insert ``[UNK]`` and ``[unusedN]``.
* whole-word masking (dataset has ``word_starts``): words are visited in random order and
  added whole while the budget allows (a word that would overflow it is skipped, as the
  reference); the 80/10/10 decision is made *per word* (the reference decides per token).
* span masking: span starts visited in random order, span length from a geometric
  distribution (p=``span_geo_prob``) truncated to ``1..span_max_length``, clipped to the
  budget and to the run of candidates; 80/10/10 per span (as the reference).
* static masking (dataset ``dynamic_masking`` false, ``dup_factor`` N): the mask epoch is
  ``epoch % N`` -- N fixed copies, cycled -- instead of ``epoch``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# reserved mask epoch for held-out evaluation: fixed masks, never reached by training epochs
EVAL_EPOCH = (1 << 32) - 1
# seed of the held-out masks: the same positions for every run, whatever its training seed
EVAL_SEED = 20260101

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)

# independent random streams per position
STREAM_SELECT, STREAM_ACTION, STREAM_REPLACE, STREAM_SPAN = 1, 2, 3, 4


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def _u64(v) -> np.ndarray:
    return np.asarray(v, dtype=np.int64).astype(np.uint64)


def instance_keys(seed: int, epoch: np.ndarray | int, index: np.ndarray) -> np.ndarray:
    """One 64-bit key per instance from (seed, epoch, index); shape of ``index``."""
    index = _u64(index)
    with np.errstate(over="ignore"):
        k = _mix(np.full(index.shape, seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64) + _GOLDEN)
        k = _mix(k ^ (_u64(epoch) * _GOLDEN + np.uint64(1)))
        return _mix(k ^ (index * _M2 + np.uint64(7)))


def position_uniform(keys: np.ndarray, T: int, stream: int) -> np.ndarray:
    """(B, T) float64 uniforms in [0, 1) from per-instance keys, a position and a stream id."""
    pos = np.arange(T, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        h = _mix(keys[:, None] ^ _mix(pos * _GOLDEN + np.uint64(stream) * _M1 + np.uint64(stream)))
    return (h >> _S11).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int
    ordinary: np.ndarray  # sorted int64 ids random replacements are drawn from

    @classmethod
    def from_vocab(cls, vocab: dict[str, int]) -> "SpecialIds":
        return cls(pad=vocab["[PAD]"], cls=vocab["[CLS]"], sep=vocab["[SEP]"], mask=vocab["[MASK]"],
                   ordinary=ordinary_token_ids(vocab))


_BRACKETED = re.compile(r"^\[[^\[\]]+\]$")


def ordinary_token_ids(vocab: dict[str, int]) -> np.ndarray:
    """Ids of vocab entries that are not special/placeholder tokens (``[PAD]``, ``[UNK]``,
    ``[CLS]``, ``[SEP]``, ``[MASK]``, ``[unused1]`` ... -- any ``[...]`` entry)."""
    ids = sorted(i for t, i in vocab.items() if not _BRACKETED.match(t))
    if not ids:
        raise ValueError("the vocab has no ordinary tokens to draw random replacements from")
    return np.asarray(ids, dtype=np.int64)


@dataclass(frozen=True)
class MaskingConfig:
    mask_rate: float = 0.15
    seed: int = 7
    dynamic: bool = True          # False: static masks, ``dup_factor`` fixed copies
    dup_factor: int = 1
    whole_word: bool = False
    span: bool = False
    span_geo_prob: float = 0.2
    span_max_length: int = 10
    replace_mask: float = 0.8     # share of chosen tokens replaced by [MASK]
    replace_random: float = 0.1   # share replaced by a random ordinary token (rest unchanged)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in (0, 1), got {self.mask_rate}")
        if self.whole_word and self.span:
            raise ValueError("whole-word and span masking are mutually exclusive")
        if self.span and not (0.0 < self.span_geo_prob <= 1.0 and self.span_max_length >= 1):
            raise ValueError("span masking needs 0 < span_geo_prob <= 1 and span_max_length >= 1")

    def mask_epoch(self, epoch: int) -> int:
        if epoch == EVAL_EPOCH:
            return epoch
        return epoch if self.dynamic else epoch % max(1, self.dup_factor)


@dataclass
class MlmBatch:
    """A collated, masked MLM batch (numpy; ``to_torch`` converts). One implementation of the engine's
    ``engine.trainer.Batch`` protocol (``units``).

    input_ids (B, T) int64 padded to the longest instance (optionally a multiple of 8),
    attention_mask (B, T) int64, token_type_ids (B, T) zeros, masked_positions (M,) flat
    indices into B*T (sorted), labels (M,) original ids, real_tokens / padded_tokens counts,
    indices (B,) dataset indices, epochs (B,) data epochs."""
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    masked_positions: np.ndarray
    labels: np.ndarray
    real_tokens: int
    padded_tokens: int
    indices: np.ndarray
    epochs: np.ndarray
    real_index: np.ndarray | None = None         # (N,) flat indices of real tokens (only with padding)
    masked_real_index: np.ndarray | None = None  # (M,) position of each masked token within real_index
    pinned: dict | None = None                   # pinned CPU tensors, prepared off the critical path for GPUs

    @property
    def units(self) -> int:
        """Loss terms of this batch (the training engine's weighting unit): masked tokens."""
        return self.num_masked

    @property
    def num_masked(self) -> int:
        return int(self.labels.shape[0])

    @property
    def has_padding(self) -> bool:
        return self.real_tokens != self.padded_tokens

    def to_torch(self, device=None, pin: bool = False) -> dict[str, Any]:
        """The arrays as torch tensors by field name (``real_index``/``masked_real_index`` may be None)."""
        import torch  # noqa: PLC0415 -- preprocessing's worker processes import this module and never torch
        out: dict[str, Any] = {}
        for name in ("input_ids", "attention_mask", "token_type_ids", "masked_positions", "labels", "real_index",
                     "masked_real_index"):
            a = getattr(self, name)
            if a is None:
                out[name] = None
                continue
            t = torch.from_numpy(np.ascontiguousarray(a))
            if pin:
                t = t.pin_memory()
            out[name] = t.to(device, non_blocking=True) if device is not None else t
        return out


def eval_masking(mask_rate: float = 0.15) -> MaskingConfig:
    """Masks of the held-out evaluation: token-level, ``mask_rate`` of each window (the
    reference's budget, ``max(1, round(rate * length))`` from the non-special tokens), a fixed
    seed, and **every** chosen position replaced by ``[MASK]`` -- the 80/10/10 noise of training
    would let a model score on the 10 % of positions that show their own token. Independent of
    the training run's seed, mask rate and masking scheme, so any two runs compare."""
    return MaskingConfig(mask_rate=mask_rate, seed=EVAL_SEED, dynamic=True, replace_mask=1.0, replace_random=0.0)


def _budget(n: np.ndarray, rate: float, n_cand: np.ndarray) -> np.ndarray:
    # np.round rounds half to even, like Python's round() in the reference
    k = np.maximum(1, np.round(rate * np.asarray(n, dtype=np.float64))).astype(np.int64)
    return np.minimum(k, n_cand)


def mask_tokens(ids: np.ndarray, lengths: np.ndarray, indices: np.ndarray, epochs: np.ndarray | int,
                special: SpecialIds, cfg: MaskingConfig,
                word_starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mask a padded batch. ``ids`` (B, T) int64 (padding = ``special.pad``), ``lengths`` (B,),
    ``indices`` (B,) dataset instance indices, ``epochs`` data epoch(s). Returns
    ``(masked_ids (B, T), selected (B, T) bool)``; the labels are ``ids[selected]``."""
    B, T = ids.shape
    epochs = np.broadcast_to(np.asarray(epochs, dtype=np.int64), (B,))
    if cfg.dynamic:
        mask_ep = epochs
    else:
        mask_ep = np.where(epochs == EVAL_EPOCH, epochs, epochs % max(1, cfg.dup_factor))
    keys = instance_keys(cfg.seed, mask_ep, indices)
    real = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    cand = real & (ids != special.cls) & (ids != special.sep) & (ids != special.pad)
    n_cand = cand.sum(1)
    k = _budget(np.asarray(lengths), cfg.mask_rate, n_cand)
    u_sel = position_uniform(keys, T, STREAM_SELECT)
    u_act = position_uniform(keys, T, STREAM_ACTION)

    if cfg.whole_word and word_starts is not None:
        selected, unit_start = _select_words(cand, word_starts, u_sel, k)
    elif cfg.span:
        u_span = position_uniform(keys, T, STREAM_SPAN)
        selected, unit_start = _select_spans(cand, u_sel, u_span, k, cfg)
    else:
        # the k candidates with the smallest keys: rank of each key within its row
        score = np.where(cand, u_sel, 2.0)
        order = np.argsort(score, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(T)[None, :].repeat(B, 0), axis=1)
        selected = rank < k[:, None]
        unit_start = np.arange(T)[None, :].repeat(B, 0)

    # 80/10/10 per unit (token, word or span): read the action uniform at the unit's start
    act = np.take_along_axis(u_act, unit_start, axis=1)
    to_mask = selected & (act < cfg.replace_mask)
    to_rand = selected & (act >= cfg.replace_mask) & (act < cfg.replace_mask + cfg.replace_random)
    out = ids.copy()
    out[to_mask] = special.mask
    if to_rand.any():
        u_rep = position_uniform(keys, T, STREAM_REPLACE)
        pick = np.minimum((u_rep * len(special.ordinary)).astype(np.int64), len(special.ordinary) - 1)
        out[to_rand] = special.ordinary[pick[to_rand]]
    return out, selected


def _select_words(cand: np.ndarray, word_starts: np.ndarray, u_sel: np.ndarray,
                  k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    B, T = cand.shape
    selected = np.zeros((B, T), dtype=bool)
    unit_start = np.tile(np.arange(T), (B, 1))
    prev_cand = np.zeros_like(cand)
    prev_cand[:, 1:] = cand[:, :-1]
    # a candidate starts a word where the dataset says so or where the previous token is not a
    # candidate (CLS/SEP, or a window that begins mid-word)
    starts = cand & ((word_starts.astype(bool)) | ~prev_cand)
    word_id = np.cumsum(starts, axis=1) - 1
    for b in range(B):
        s = np.flatnonzero(starts[b])
        if not len(s) or k[b] <= 0:
            continue
        c = np.flatnonzero(cand[b])
        wid = word_id[b, c]
        lens = np.bincount(wid, minlength=len(s))
        budget, total = int(k[b]), 0
        for w in np.argsort(u_sel[b, s], kind="stable"):
            if total >= budget:
                break
            if total + lens[w] > budget:
                continue
            pos = c[wid == w]
            selected[b, pos] = True
            unit_start[b, pos] = s[w]
            total += int(lens[w])
    return selected, unit_start


def _select_spans(cand: np.ndarray, u_sel: np.ndarray, u_span: np.ndarray, k: np.ndarray,
                  cfg: MaskingConfig) -> tuple[np.ndarray, np.ndarray]:
    B, T = cand.shape
    p, L = cfg.span_geo_prob, cfg.span_max_length
    probs = np.array([p * (1 - p) ** (i - 1) for i in range(1, L + 1)])
    cdf = np.cumsum(probs / probs.sum())
    span_len = np.minimum(np.searchsorted(cdf, u_span, side="right") + 1, L)
    selected = np.zeros((B, T), dtype=bool)
    unit_start = np.tile(np.arange(T), (B, 1))
    for b in range(B):
        c = np.flatnonzero(cand[b])
        budget, total = int(k[b]), 0
        for start in c[np.argsort(u_sel[b, c], kind="stable")]:
            if total >= budget:
                break
            if selected[b, start]:
                continue
            want = min(int(span_len[b, start]), budget - total)
            t = start
            while want > 0 and t < T and cand[b, t] and not selected[b, t]:
                selected[b, t] = True
                unit_start[b, t] = start
                total += 1
                want -= 1
                t += 1
    return selected, unit_start


def collate(instances: Sequence[np.ndarray], indices: Sequence[int] | np.ndarray,
            epochs: Sequence[int] | np.ndarray | int, special: SpecialIds, cfg: MaskingConfig,
            word_starts: Sequence[np.ndarray | None] | None = None, pad_to_multiple_of: int = 1) -> MlmBatch:
    """Pad ``instances`` to the batch's longest (rounded up to ``pad_to_multiple_of``), mask
    them and return a :class:`MlmBatch`. ``word_starts``: one flag array per instance (whole-word masking)."""
    lengths = np.array([len(x) for x in instances], dtype=np.int64)
    B = len(instances)
    T = int(lengths.max()) if B else 0
    if pad_to_multiple_of > 1:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    ids = np.full((B, T), special.pad, dtype=np.int64)
    ws = np.zeros((B, T), dtype=bool) if word_starts is not None else None
    for i, x in enumerate(instances):
        ids[i, : len(x)] = x
        if ws is not None and word_starts is not None:
            flags = word_starts[i]
            if flags is None:
                raise ValueError("collate: whole-word masking without word starts for an instance "
                                 "(the dataset has no word_starts.npy)")
            ws[i, : len(x)] = flags
    index_arr = np.asarray(indices, dtype=np.int64)
    epochs_arr = np.broadcast_to(np.asarray(epochs, dtype=np.int64), (B,)).copy()
    masked, selected = mask_tokens(ids, lengths, index_arr, epochs_arr, special, cfg, ws)
    attn = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    flat = np.flatnonzero(selected.reshape(-1))
    real_index = masked_real_index = None
    if int(lengths.sum()) != B * T:
        real_index = np.flatnonzero(attn.reshape(-1)).astype(np.int64)
        masked_real_index = np.searchsorted(real_index, flat).astype(np.int64)
    return MlmBatch(input_ids=masked, attention_mask=attn, token_type_ids=np.zeros((B, T), dtype=np.int64),
                    masked_positions=flat.astype(np.int64), labels=ids.reshape(-1)[flat],
                    real_tokens=int(lengths.sum()), padded_tokens=B * T, indices=index_arr, epochs=epochs_arr,
                    real_index=real_index, masked_real_index=masked_real_index)


__all__ = ["MaskingConfig", "SpecialIds", "MlmBatch", "mask_tokens", "collate", "ordinary_token_ids",
           "instance_keys", "position_uniform", "EVAL_EPOCH", "EVAL_SEED", "eval_masking"]
