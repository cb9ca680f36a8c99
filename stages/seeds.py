"""seeds: retrain a method at more training seeds, at its chosen operating point (params `seeds`).

Reads params `seed`, `seeds.n`, `base.model`, `data.positive_threshold`, the train.* keys the train stage reads,
`general.*`, `evaluate.batch_size`, <data>/{train,dev,eval}.jsonl, the base fingerprint <base>, <trained>
(train's record: the learning rate it trained at, after any retry) and <chosen> (the interpolate stage's chosen
alpha and the base's general scores).
With seeds.n = 1 it trains nothing (and imports no torch). With N > 1 it trains N - 1 more runs (seeds seed+1
... seed+N-1), blends each at the chosen alpha and scores eval and the general set.
Writes <out>/points.json: the lr, alpha, seeds and, per extra seed, its figures and its scores pair by pair
(the report's seed-aware intervals), with what they cost.
Run: python stages/seeds.py --mode lora --data data/prepared --base models/base \
         --trained dvclive/train_lora/train.json --chosen plots/interpolate/lora/chosen.json --out plots/seeds/lora
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
import json
import logging
import time
from pathlib import Path

from pairtune import io, params
from pairtune.errors import run_stage, setup_logging

log = logging.getLogger("seeds")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--data", "--base", "--trained", "--chosen", "--out"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--mode", required=True, help="a method: a section of params train (train.methods)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    record: dict = {"n": p.seeds.n, "seeds": [p.seed], "extra": []}
    if p.seeds.n > 1:
        import numpy as np

        from pairtune import seeds
        from pairtune.data import is_binary, read_pairs, read_prepared

        lr = float(json.loads(Path(args.trained).read_text(encoding="utf-8"))["lr"])
        chosen = json.loads(Path(args.chosen).read_text(encoding="utf-8"))
        data = {s: read_prepared(f"{args.data}/{s}.jsonl") for s in ("train", "dev", "eval")}
        general = read_pairs(p.general.path, p.general) if p.general.path and "general_base_scores" in chosen else None
        base_g = np.array(chosen["general_base_scores"], dtype=float) if general else None
        extra = seeds.extra_seeds(p.seed, p.seeds.n)
        log.info("%s: %d more training seeds (%s) at lr %g, alpha %g", args.mode, len(extra),
                 ", ".join(map(str, extra)), lr, chosen["alpha"])
        start = time.perf_counter()
        points = [seeds.replicate(args.mode, p, s, lr, chosen["alpha"], data, is_binary(data["train"] + data["dev"]),
                                  args.base, general, base_g) for s in extra]
        record = {"n": p.seeds.n, "seeds": [p.seed, *extra], "lr": lr, "alpha": chosen["alpha"], "extra": points,
                  "wall_s": round(time.perf_counter() - start, 2)}
    else:
        log.info("%s: seeds.n is 1: the pipeline's own training seed only", args.mode)
    with io.atomic_dir(args.out) as tmp:
        io.write_json(tmp / "points.json", record)


if __name__ == "__main__":
    run_stage(main)
