"""``miniroberta preprocess``: corpus (one document per line) -> memory-mapped MLM dataset.

The ``mlm`` processor matches UER-py's exactly (see docs/preprocess.md): every line is one document,
``[CLS] + wordpiece ids + [SEP]``, cut into consecutive ``seq_length`` windows; continuation windows
do not start with ``[CLS]``, the last window is shorter, nothing is dropped and nothing is padded on
disk. ``full_sentences`` windows the concatenation of all documents as one stream instead.

The modules, in pipeline order:

* ``config``   -- ``PreprocessConfig``: every setting, declared once (the command's options are generated);
* ``corpus``   -- the corpus files, their byte ranges (cut at line ends), the corpus hash, the [UNK] check;
* ``tokenize`` -- ``CorpusTokenizer``: BERT WordPiece ids exactly as the reference, vectorised; jieba
  word starts for whole-word masking;
* ``shards``   -- the worker side: one byte range -> shard files in the dataset's temporary folder;
* ``assemble`` -- the shards -> ``tokens.npy`` / ``offsets.npy`` / ``word_starts.npy``, hashed per chunk;
* ``build``    -- ``build_dataset``: claim, plan, run the workers, assemble, write the manifest last;
* ``cli``      -- ``configure`` / ``run`` of the command.

(The function ``assemble`` is not re-exported: ``preprocess.assemble`` is the module.)

Every line is processed on its own, so the bytes do not depend on the number of processes, and memory
is bounded by the range size (a few MiB per worker), never by the corpus size.
"""
from miniroberta.data.preprocess.build import build_dataset
from miniroberta.data.preprocess.cli import config_from_args, configure, run
from miniroberta.data.preprocess.config import ON_ERROR, PROCESSORS, CorpusError, PreprocessConfig
from miniroberta.data.preprocess.corpus import (UNK_WARN_RATE, ByteRange, plan_ranges, plan_tasks, resolve_corpus,
                                                suggest_vocab, warn_unk_rate)
from miniroberta.data.preprocess.shards import RangeResult, WorkerOptions, process_range
from miniroberta.data.preprocess.tokenize import (MAX_INPUT_CHARS_PER_WORD, CorpusTokenizer, jieba_word_starts,
                                                  word_start_bits)

__all__ = ["build_dataset", "PreprocessConfig", "CorpusError", "configure", "run", "config_from_args",
           "CorpusTokenizer", "word_start_bits", "jieba_word_starts", "resolve_corpus", "plan_ranges", "plan_tasks",
           "ByteRange", "RangeResult", "WorkerOptions", "process_range", "warn_unk_rate",
           "suggest_vocab", "UNK_WARN_RATE", "MAX_INPUT_CHARS_PER_WORD", "ON_ERROR", "PROCESSORS"]
