"""prepare: validate and normalise the configured train / dev / eval pair files.

Reads params `seed`, `data.*`, `prepare.*` and the files they name. Writes <out>/{train,dev,eval}.jsonl
(labels scaled to [0, 1]) and <summary> (sizes, class balance, dropped duplicates and overlaps).
Bad input: one line naming file, line and problem; exit 2; nothing written.
Run: python stages/prepare.py --out data/prepared --summary metrics/prepare.json
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse

from pairtune import io, params
from pairtune.data import prepare, read_pairs, strip_internal
from pairtune.errors import run_stage, setup_logging


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", required=True)
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    train = read_pairs(p.data.train, p.data)
    dev = read_pairs(p.data.dev, p.data) if p.data.dev else None
    eval_ = read_pairs(p.data.eval, p.data)
    result = prepare(train, dev, eval_, p.data, p.prepare, p.seed)
    with io.atomic_dir(args.out) as tmp:
        for name, pairs in result.splits.items():
            io.write_jsonl(tmp / f"{name}.jsonl", strip_internal(pairs))
    io.write_json(args.summary, result.summary)


if __name__ == "__main__":
    run_stage(main)
