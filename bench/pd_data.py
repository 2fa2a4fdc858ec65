"""The data of bench/distill_study.py's measured run: a review-heavy pretraining corpus and the transfer texts.

Writes into ``OUT``:

* ``corpus/reviews_clean.txt`` -- the lines of ``reviews_online_shopping_10_cats.txt`` and ``reviews_waimai_10k.txt``,
  de-duplicated (whitespace ignored), without every line that shares a 20-character span with a chnsenticorp or
  book_review dev text (``miniroberta.data.decontam``), shuffled with seed 7;
* ``corpus/`` links to ``cluecorpussmall_sampled.txt``, ``news_thucnews_sample.txt``, ``wiki_cmrc2018_contexts.txt``
  (general text), so ``miniroberta preprocess --corpus_path OUT/corpus`` reads the 18 MB mix;
* ``transfer_<task>.txt`` -- the clean review lines that are not train texts of the task: its unlabeled
  in-domain texts for arm (c).

    python bench/pd_data.py runs/pd
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

REVIEWS = ("reviews_online_shopping_10_cats.txt", "reviews_waimai_10k.txt")
GENERAL = ("cluecorpussmall_sampled.txt", "news_thucnews_sample.txt", "wiki_cmrc2018_contexts.txt")
TASKS = ("chnsenticorp", "book_review")


def write_lines(path: str, lines: list[str]) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    from miniroberta.data import tasks as T
    from miniroberta.data.decontam import normalize, task_spans
    data = Path(args.data)
    spans = task_spans(TASKS, str(data / "tasks"), splits=("dev",))
    keep, seen, dropped = [], set(), 0
    for name in REVIEWS:
        with open(data / "corpus" / name, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                n = normalize(line)
                if not n or n in seen:
                    continue
                seen.add(n)
                if spans.match(line) is not None:
                    dropped += 1
                    continue
                keep.append(line)
    random.Random(7).shuffle(keep)
    corpus = os.path.join(args.out, "corpus")
    os.makedirs(corpus, exist_ok=True)
    write_lines(os.path.join(corpus, "reviews_clean.txt"), keep)
    for name in GENERAL:
        link = os.path.join(corpus, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(data / "corpus" / name), link)
    print(f"reviews_clean.txt: {len(keep):,} lines kept, {dropped} left out (a 20-character span of a "
          f"{'/'.join(TASKS)} dev text)")
    for task in TASKS:
        files = T.resolve_task(task, str(data / "tasks"))
        train = T.read_examples(files.train_path, text_fields=files.text_fields, label_field=files.label_field)
        texts = {normalize(t) for t in train.texts[0]}
        transfer = [line for line in keep if normalize(line) not in texts]
        write_lines(os.path.join(args.out, f"transfer_{task}.txt"), transfer)
        print(f"transfer_{task}.txt: {len(transfer):,} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
