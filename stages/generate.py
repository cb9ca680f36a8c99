"""generate: write the synthetic dating-profile pair set and its summary.

Reads params `seed`, `generate.*`. Writes <out>/{train,dev,eval}.jsonl and <summary> (JSON metrics).
Run: python stages/generate.py --out data/demo --summary metrics/generate.json
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
import logging

from pairtune import io, params
from pairtune.errors import run_stage, setup_logging
from pairtune.generate import generate, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", required=True)
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    sizes = {"train": p.generate.n_train, "dev": p.generate.n_dev, "eval": p.generate.n_eval}
    splits = generate(p.seed, sizes, p.generate.difficulty)
    with io.atomic_dir(args.out) as tmp:
        for name, pairs in splits.items():
            io.write_jsonl(tmp / f"{name}.jsonl", pairs)
    io.write_json(args.summary, summary(splits))
    logging.getLogger("generate").info("wrote %s pairs to %s", sizes, args.out)


if __name__ == "__main__":
    run_stage(main)
