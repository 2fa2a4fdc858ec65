"""The pretraining batch source resumes exactly (torchtitan's dataloader test): a source rebuilt at step 40
from nothing but the step gives the same next 8 batches as one that ran from step 0."""
from __future__ import annotations

import numpy as np
import pytest

from miniroberta.data.dataset import MlmDataset, write_dataset
from miniroberta.data.masking import MaskingConfig, MlmBatch, SpecialIds
from miniroberta.modeling.tokenizer import read_vocab
from miniroberta.pretrain.batches import BatchSource, Stream

FIELDS = ("input_ids", "attention_mask", "token_type_ids", "masked_positions", "labels", "indices", "epochs",
          "real_index", "masked_real_index")


@pytest.fixture
def dataset(tmp_path, vocab_file):
    """150 instances of 3..32 ids with word starts (an epoch is ~9 batches of 8 at world 2: 40 steps cross epochs)."""
    rng = np.random.default_rng(0)
    inst = [[2, *rng.integers(5, 64, int(n) - 2).tolist(), 3] for n in rng.integers(3, 33, 150)]
    ws = [[1, *rng.integers(0, 2, len(x) - 2).tolist(), 1] for x in inst]
    path = write_dataset(tmp_path / "ds", inst, {"vocab_sha256": "0" * 64, "vocab_size": 64, "seq_length": 32},
                         word_starts=ws)
    return path, SpecialIds.from_vocab(read_vocab(vocab_file))


def source(path: str, special: SpecialIds, j0: int, workers: int, world: int, rank: int,
           mcfg: MaskingConfig) -> BatchSource:
    ds = MlmDataset(path)                        # a new process: a fresh dataset, stream and source
    return BatchSource(ds, Stream(len(ds), seed=11), special, mcfg, batch_size=8, world=world, rank=rank, j0=j0,
                       workers=workers, pad_multiple=8)


def same(a: MlmBatch, b: MlmBatch) -> bool:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
            return False
    return a.real_tokens == b.real_tokens and a.padded_tokens == b.padded_tokens


@pytest.mark.parametrize("workers,world,rank,whole_word", [(0, 1, 0, False), (2, 1, 0, True), (2, 2, 1, False)])
def test_rebuilt_at_step_40_gives_the_next_8_batches(dataset, workers, world, rank, whole_word):
    path, special = dataset
    mcfg = MaskingConfig(seed=5, whole_word=whole_word)
    straight = source(path, special, 0, workers, world, rank, mcfg)
    try:
        seen = [straight.next() for _ in range(48)]
    finally:
        straight.close()
    resumed = source(path, special, 40, workers, world, rank, mcfg)
    try:
        after = [resumed.next() for _ in range(8)]
    finally:
        resumed.close()
    assert all(same(a, b) for a, b in zip(seen[40:], after))
    assert len({int(e) for b in seen for e in b.epochs}) > 1          # the 48 batches cross an epoch boundary
    assert not same(seen[40], seen[41])                              # the check can fail: batches differ


def test_ranks_split_the_global_batch(dataset):
    """World 2: the two ranks' micro-batch j together are world 1's micro-batch j at twice the batch size."""
    path, special = dataset
    mcfg = MaskingConfig(seed=5)
    ds = MlmDataset(path)
    one = BatchSource(ds, Stream(len(ds), 11), special, mcfg, 16, 1, 0, 0, 0, 8)
    two = [BatchSource(ds, Stream(len(ds), 11), special, mcfg, 8, 2, r, 0, 0, 8) for r in (0, 1)]
    for _ in range(12):
        whole = one.next()
        halves = [s.next() for s in two]
        assert np.array_equal(np.concatenate([h.indices for h in halves]), whole.indices)
        assert np.array_equal(np.concatenate([h.labels for h in halves]), whole.labels)
