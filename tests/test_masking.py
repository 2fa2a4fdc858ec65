"""Masking is a pure function of (seed, epoch, index) with the reference's rates and exclusions."""
from __future__ import annotations

import numpy as np
import pytest

from miniroberta.data.masking import EVAL_EPOCH, MaskingConfig, SpecialIds, collate, mask_tokens, ordinary_token_ids

VOCAB = {t: i for i, t in enumerate(["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused2]"]
                                    + [f"w{i}" for i in range(200)] + ["##x", "[foo]"])}
SP = SpecialIds.from_vocab(VOCAB)
PAD, CLS, SEP, MASK = SP.pad, SP.cls, SP.sep, SP.mask


def make(n, seed=0, lo=3, hi=60, with_sep_inside=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        body = list(rng.integers(7, 207, int(rng.integers(lo, hi))))
        if with_sep_inside:
            body[len(body) // 2] = SEP
        out.append(np.array([CLS] + body + [SEP]))
    return out


def test_ordinary_tokens_exclude_specials_and_placeholders():
    ords = set(ordinary_token_ids(VOCAB).tolist())
    for t in ("[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused2]", "[foo]"):
        assert VOCAB[t] not in ords
    assert VOCAB["w0"] in ords and VOCAB["##x"] in ords
    assert len(ords) == 201


def test_pure_function_of_seed_epoch_index():
    inst = make(32)
    cfg = MaskingConfig(seed=3)
    a = collate(inst, range(100, 132), 0, SP, cfg)
    b = collate(inst, range(100, 132), 0, SP, cfg)
    assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.masked_positions, b.masked_positions)
    # the same instance gets the same mask whatever batch / position / padding it lands in
    c = collate(inst[5:6] + inst[:3], [105, 100, 101, 102], 0, SP, cfg, pad_to_multiple_of=8)
    n = len(inst[5])
    assert np.array_equal(c.input_ids[0, :n], a.input_ids[5, :n])
    assert np.array_equal(c.input_ids[1, :len(inst[0])], a.input_ids[0, :len(inst[0])])
    # differs by epoch, by index and by seed
    d = collate(inst, range(100, 132), 1, SP, cfg)
    e = collate(inst, range(200, 232), 0, SP, cfg)
    f = collate(inst, range(100, 132), 0, SP, MaskingConfig(seed=4))
    for other in (d, e, f):
        assert not np.array_equal(other.input_ids, a.input_ids)


def test_static_masking_cycles_dup_factor_copies():
    inst = make(16)
    cfg = MaskingConfig(dynamic=False, dup_factor=3)
    m = [collate(inst, range(16), ep, SP, cfg).input_ids for ep in range(4)]
    assert np.array_equal(m[0], m[3])
    assert not np.array_equal(m[0], m[1]) and not np.array_equal(m[1], m[2])
    ev1 = collate(inst, range(16), EVAL_EPOCH, SP, cfg).input_ids
    ev2 = collate(inst, range(16), EVAL_EPOCH, SP, MaskingConfig()).input_ids
    assert np.array_equal(ev1, ev2)  # eval masks fixed, independent of static/dynamic


def test_budget_rates_and_exclusions():
    inst = make(3000, seed=1, with_sep_inside=True)
    cfg = MaskingConfig(seed=11)
    b = collate(inst, np.arange(3000), 0, SP, cfg)
    ids = np.full(b.input_ids.shape, PAD)
    for i, x in enumerate(inst):
        ids[i, :len(x)] = x
    sel = np.zeros(ids.size, bool)
    sel[b.masked_positions] = True
    sel = sel.reshape(ids.shape)
    # labels are the original ids at the masked positions
    assert np.array_equal(b.labels, ids.reshape(-1)[b.masked_positions])
    # never CLS / SEP / PAD
    assert not np.isin(ids[sel], [CLS, SEP, PAD]).any()
    # exactly max(1, round(0.15 * n)) per instance, n counting [CLS]/[SEP] (the reference's count)
    for i, x in enumerate(inst):
        ncand = int(np.sum(~np.isin(x, [CLS, SEP, PAD])))
        assert sel[i].sum() == min(ncand, max(1, round(0.15 * len(x))))
    assert 0.13 < sel.sum() / b.real_tokens < 0.17
    # 80 / 10 / 10
    new = b.input_ids[sel]
    orig = ids[sel]
    n = sel.sum()
    frac_mask = np.mean(new == MASK)
    changed = (new != MASK) & (new != orig)
    assert abs(frac_mask - 0.8) < 0.02
    # random replacements (some coincide with the original: 1/201 chance)
    assert abs(np.mean(changed) - 0.1 * 200 / 201) < 0.015
    assert abs(np.mean(new == orig) - (0.1 + 0.1 / 201)) < 0.015
    assert np.isin(new[changed], SP.ordinary).all()
    assert n == b.num_masked
    # the untouched positions are unchanged
    assert np.array_equal(b.input_ids[~sel], ids[~sel])
    assert b.attention_mask.sum() == b.real_tokens and not b.token_type_ids.any()


def test_single_real_token_and_empty_instances():
    inst = [np.array([CLS, SEP]), np.array([CLS, 10, SEP]), np.array([SEP])]
    b = collate(inst, [0, 1, 2], 0, SP, MaskingConfig())
    assert b.num_masked == 1 and b.masked_positions[0] == 1 * b.input_ids.shape[1] + 1


def words_of(ws_row, cand_row):
    """Word spans over candidates: start where ws==1 or the previous token is not a candidate."""
    words, cur = [], []
    for t, (w, c) in enumerate(zip(ws_row, cand_row)):
        if not c:
            if cur:
                words.append(cur)
            cur = []
            continue
        if (w or not cur) and cur:
            words.append(cur)
            cur = []
        cur.append(t)
    if cur:
        words.append(cur)
    return words


def test_whole_word_masking_masks_whole_words_with_one_decision_per_word():
    inst = make(400, seed=2, lo=10)
    rng = np.random.default_rng(5)
    ws = [np.r_[1, 1, (rng.random(len(x) - 3) < 0.4).astype(int), 1] for x in inst]
    cfg = MaskingConfig(whole_word=True, seed=2)
    b = collate(inst, np.arange(400), 0, SP, cfg, word_starts=ws)
    T = b.input_ids.shape[1]
    sel = np.zeros(400 * T, bool)
    sel[b.masked_positions] = True
    sel = sel.reshape(400, T)
    multi = 0
    for i, x in enumerate(inst):
        cand = ~np.isin(x, [CLS, SEP, PAD])
        k = max(1, round(0.15 * len(x)))
        assert sel[i].sum() <= k
        for w in words_of(ws[i], cand):
            s = sel[i, w]
            assert s.all() or not s.any(), f"instance {i}: word {w} partially masked"
            if s.all() and len(w) > 1:
                multi += 1
                new = b.input_ids[i, w]
                # 80/10/10 decided per word: all [MASK] or none
                assert (new == MASK).all() or not (new == MASK).any()
    assert multi > 50
    assert 0.10 < sel.sum() / b.real_tokens < 0.17


def test_span_masking_contiguous_spans_within_budget():
    inst = make(400, seed=3, lo=30, hi=100)
    cfg = MaskingConfig(span=True, seed=5)
    b = collate(inst, np.arange(400), 0, SP, cfg)
    T = b.input_ids.shape[1]
    sel = np.zeros(400 * T, bool)
    sel[b.masked_positions] = True
    sel = sel.reshape(400, T)
    runs = []
    for i, x in enumerate(inst):
        assert sel[i].sum() == max(1, round(0.15 * len(x)))
        r = 0
        for v in sel[i]:
            if v:
                r += 1
            elif r:
                runs.append(r)
                r = 0
    runs = np.array(runs)
    assert runs.max() > 3 and np.mean(runs) > 2.0  # spans, not single tokens


def test_mask_tokens_rejects_bad_config():
    with pytest.raises(ValueError):
        MaskingConfig(mask_rate=0.0)
    with pytest.raises(ValueError):
        MaskingConfig(whole_word=True, span=True)
    ids = np.array([[CLS, 10, 11, SEP]])
    out, sel = mask_tokens(ids, np.array([4]), np.array([0]), 0, SP, MaskingConfig())
    assert sel.sum() == 1 and not sel[0, 0] and not sel[0, 3]


def test_eval_masks_are_all_mask_fixed_and_independent_of_the_training_settings():
    from miniroberta.data.masking import eval_masking
    inst = make(64, seed=3)
    ev = collate(inst, range(64), EVAL_EPOCH, SP, eval_masking())
    flat = ev.input_ids.reshape(-1)
    pos = np.asarray(ev.masked_positions).reshape(-1)
    assert len(pos) > 0 and (flat[pos] == SP.mask).all()     # no 80/10/10: every chosen position is [MASK]
    assert (flat == SP.mask).sum() == len(pos)
    # the same positions whatever the training run's seed or rate
    again = collate(inst, range(64), EVAL_EPOCH, SP, eval_masking())
    assert np.array_equal(again.input_ids, ev.input_ids)
    tr = collate(inst, range(64), EVAL_EPOCH, SP, MaskingConfig(mask_rate=0.15, seed=123))
    tpos = np.asarray(tr.masked_positions).reshape(-1)
    assert not np.array_equal(tpos, pos)
    assert (tr.input_ids.reshape(-1)[tpos] != SP.mask).any()  # training masks keep/replace some
