"""pairtune's train stage code (pairtune.training.train_mode) under the benchmark's measurement.

Same output line as bench/reference.py. Eval numbers come from the saved model reloaded through the guard.
Run: python bench/ours.py --mode full --data data/prepared --base models/base
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("full", "lora"), required=True)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=0, help="override train.epochs (quick runs)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N train pairs (quick runs)")
    args = ap.parse_args()

    import numpy as np

    from pairtune import metrics, models, params
    from pairtune.data import is_binary, read_prepared
    from pairtune.evaluation import unique_texts
    from pairtune.training import train_mode
    from reference import LR  # bench/reference.py: run as a script, bench/ is on sys.path

    p = params.load(args.params)
    if args.epochs:
        p = replace(p, train=replace(p.train, epochs=args.epochs))
    train = read_prepared(f"{args.data}/train.jsonl")
    if args.limit:
        train = train[: args.limit]
    dev, ev = read_prepared(f"{args.data}/dev.jsonl"), read_prepared(f"{args.data}/eval.jsonl")
    with tempfile.TemporaryDirectory() as out:
        # The same recipe as the reference: its fixed learning rate where params.yaml says auto
        configured = p.train.method(args.mode).lr
        lr = LR[args.mode] if configured == "auto" else configured
        m = train_mode(args.mode, p, train, dev, is_binary(train + dev), args.base, out, None, lr)
        model = models.load_model(out)
        texts = unique_texts(ev)
        cos = metrics.pair_scores(models.embed(model, texts), {t: i for i, t in enumerate(texts)}, ev)
    y = np.array([x["label"] for x in ev])
    print(json.dumps({"wall_s": m["train_wall_s"], "steps": m["steps"],
                      "pairs_per_s": len(train) * p.train.epochs / m["train_wall_s"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "spearman": metrics.spearman(cos, y.astype(float)), "auc": metrics.auc(cos, y)}))


if __name__ == "__main__":
    main()
