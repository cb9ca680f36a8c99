"""tune: choose train.<mode>.lr on the dev split when it is auto (successive halving over params `tune`).

Reads params `seed`, `base.model`, `data.positive_threshold`, the shared `train.*` keys, `train.<mode>` and
`tune.*`, `general.*` (ties between trials go to more general retention), <data>/{train,dev}.jsonl and the
base fingerprint <base>; never the eval split. Writes <out>/trials.json
(the chosen lr, the dev metric and every trial: rung, lr, steps, dev AUC and Spearman), <out>/choice.json (the
lr alone, which the train stage reads) and <metrics> (the choice and what the search cost). A number in train.<mode>.lr: no search, and the
record says so.
Run: python stages/tune.py --mode lora --data data/prepared --base models/base --out plots/tune/lora \
         --metrics metrics/tune/lora.json
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
import logging
import time

from pairtune import io, params, tune
from pairtune.data import is_binary, read_pairs, read_prepared
from pairtune.errors import run_stage, setup_logging

log = logging.getLogger("tune")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--data", "--base", "--out", "--metrics"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--mode", required=True, help="a method: a section of params train (train.methods)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    configured = p.train.method(args.mode).lr
    record: dict = {"lr": configured, "searched": 0}
    cost = {"lr": configured, "search_s": 0.0, "trials": 0}
    if configured == "auto":
        train_pairs, dev_pairs = read_prepared(f"{args.data}/train.jsonl"), read_prepared(f"{args.data}/dev.jsonl")
        binary = is_binary(train_pairs + dev_pairs)
        metric, total = tune.metric_for(p.tune, binary), tune.full_steps(p, len(train_pairs))
        grid = p.tune.grid(args.mode)
        plan = tune.rung_plan(len(grid), p.tune.rungs, p.tune.budget, total)
        log.info("%s: %d candidates, rungs of %s steps (one training run: %d steps), ranked by dev %s", args.mode,
                 len(grid), " -> ".join(f"{n} x {s}" for n, s in plan), total, metric)
        start = time.perf_counter()
        # the general set breaks ties between trials (retention), as interpolate measures it
        general = read_pairs(p.general.path, p.general) if p.general.path else None
        trial = tune.trials(args.mode, p, train_pairs, dev_pairs, binary, args.base, total, general)
        lr, trials, added = tune.search(grid, plan, p.tune.tie, metric, trial, p.tune.extend)
        wall = round(time.perf_counter() - start, 2)
        log.info("%s: chose lr %g on dev %s in %.1f s", args.mode, lr, metric, wall)
        record = {"lr": lr, "searched": 1, "metric": metric, "run_steps": total, "tie": p.tune.tie,
                  "grid": list(grid), "extended": added, "tie_break": "retention" if "retention" in trials[0] else "lr",
                  "trials": [{k: v for k, v in t.items() if k != "wall_s"} for t in trials]}
        if note := tune.edge_note(args.mode, lr, sorted({t["lr"] for t in trials}), added):
            log.warning("%s: %s", args.mode, note)
            record["note"] = note
        cost = {"lr": lr, "search_s": wall, "trials": len(trials),
                "trial_steps_share": round(sum(t["steps"] for t in trials) / total, 4)}
    else:
        log.info("%s: train.%s.lr is %g: no search", args.mode, args.mode, configured)
    with io.atomic_dir(args.out) as tmp:
        io.write_json(tmp / "trials.json", record)
        # what train reads, apart from the trials: a search that changes but chooses the same rate retrains nothing
        io.write_json(tmp / "choice.json", {"lr": record["lr"], "searched": record["searched"]})
    io.write_json(args.metrics, {args.mode: cost})


if __name__ == "__main__":
    run_stage(main)
