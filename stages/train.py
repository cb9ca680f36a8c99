"""train: fine-tune the base model on the prepared pairs, fully or with a LoRA adapter.

Reads params `seed`, `data.positive_threshold`, `train.*` (shared keys and the mode's own section),
`tune.{metric,tie,retries,retry_factor}`, <data>/{train,dev}.jsonl, the base fingerprint <base> and <tune> (the
learning rate chosen on dev, used when `train.<mode>.lr` is auto). A searched rate whose whole run came apart on
dev is trained again at a lower rate (tune.retries; pairtune.training.train_checked); train.json says so.
Writes <out>/ (a SentenceTransformer folder for `full`, adapter files only for `lora`, plus the probe
fingerprint), <metrics> (training cost under the mode's name) and in <live> the DVCLive curves and train.json
(the full record: knobs as decided, machine, sizes).
Run: python stages/train.py --mode lora --data data/prepared --base models/base --out models/lora \
         --metrics metrics/train/lora.json --live dvclive/train_lora --tune plots/tune/lora/choice.json
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from pairtune import distributed, io, models, params
from pairtune.data import is_binary, read_prepared
from pairtune.errors import run_stage, setup_logging
from pairtune.training import chosen_lr, steps_per_epoch, train_checked, train_mode
from pairtune.tune import metric_for

log = logging.getLogger("train")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--data", "--base", "--out", "--metrics", "--live"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--mode", required=True, help="a method: a section of params train (train.methods)")
    ap.add_argument("--tune", help="the tune stage's record: its lr is used when train.<mode>.lr is auto")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    if p.train.processes > 1 and not distributed.in_worker():
        # Start this very script as train.processes DDP workers; rank 0 writes everything below.
        distributed.check_batch(p.train.batch_size, p.train.processes)
        try:
            distributed.launch(__file__, sys.argv[1:] if argv is None else argv, p.train.processes,
                               models.pick_device(p.train.device))
        finally:  # a worker torchrun had to SIGKILL leaves its temporary folder: nothing half-written stays
            io.remove_stale(args.out)
        return
    record = json.loads(Path(args.tune).read_text(encoding="utf-8")) if args.tune else None
    lr = chosen_lr(args.mode, p.train.method(args.mode).lr, record)
    searched = p.train.method(args.mode).lr == "auto"  # a searched rate is checked at full length (tune.retries)
    train_pairs = read_prepared(f"{args.data}/train.jsonl")
    dev_pairs = read_prepared(f"{args.data}/dev.jsonl")
    log.info("%d train pairs, %d steps per epoch, %d epochs%s", len(train_pairs),
             steps_per_epoch(len(train_pairs), p.train.batch_size), p.train.epochs,
             f", stopping at step {p.train.max_steps} (train.max_steps)" if p.train.max_steps else "")
    if distributed.world()[0] != 0:  # other workers train their share and write nothing
        with tempfile.TemporaryDirectory(prefix="pairtune-worker-") as scratch:
            train_mode(args.mode, p, train_pairs, dev_pairs, is_binary(train_pairs + dev_pairs), args.base,
                       scratch, None, lr)
        return
    binary = is_binary(train_pairs + dev_pairs)
    with io.atomic_dir(args.out) as tmp:
        if searched:
            metrics = train_checked(args.mode, p, train_pairs, dev_pairs, binary, args.base, tmp, args.live, lr,
                                    metric_for(p.tune, binary))
        else:
            metrics = train_mode(args.mode, p, train_pairs, dev_pairs, binary, args.base, tmp, args.live, lr)
        models.load_model(tmp, "cpu")  # refuse to publish a model that does not reload as trained
    # The full record (knobs as decided, machine, sizes) beside the curves; the metrics file keeps only the
    # cost a person compares across experiments. The wall time stays out of the record so a rerun that
    # trains the same bytes leaves the DVCLive folder (a cached out) byte-identical.
    # (the dev curve is DVCLive's, beside it)
    io.write_json(Path(args.live) / "train.json",
                  {k: v for k, v in metrics.items() if k not in ("train_wall_s", "dev")})
    io.write_json(args.metrics, {args.mode: {"train_s": metrics["train_wall_s"],
                                             "mb": round(metrics["artifact_bytes"] / 1e6, 3)}})


if __name__ == "__main__":
    run_stage(main)
