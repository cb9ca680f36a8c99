"""evaluate: score one model (base, full or LoRA) on the eval split with the eight metrics.

Loads the model through the guarded loader (a LoRA adapter merged and verified), encodes each unique dev
and eval text once, chooses thresholds on dev and reports on eval.
Reads params `seed`, `data.positive_threshold`, `evaluate.*`, <model>/ and <data>/{dev,eval}.jsonl.
Writes <metrics> (flat numeric JSON for dvc metrics) and <plots>/ (roc, scores, histogram, predictions,
details).
Run: python stages/evaluate.py --model models/lora --data data/prepared \
         --metrics metrics/evaluate_lora.json --plots plots/evaluate_lora
"""

from __future__ import annotations

import argparse

from pairtune import io, models, params
from pairtune.data import read_prepared
from pairtune.errors import run_stage, setup_logging
from pairtune.evaluation import evaluate, unique_texts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--model", "--data", "--metrics", "--plots"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    dev, eval_ = read_prepared(f"{args.data}/dev.jsonl"), read_prepared(f"{args.data}/eval.jsonl")
    model = models.load_model(args.model, models.pick_device(p.train.device))
    texts = unique_texts(dev, eval_)
    emb = models.embed(model, texts, p.evaluate.batch_size)
    result = evaluate(emb, {t: i for i, t in enumerate(texts)}, dev, eval_, p.evaluate,
                      p.data.positive_threshold, p.seed)
    with io.atomic_dir(args.plots) as tmp:
        for name in ("roc", "scores", "histogram", "predictions", "details"):
            io.write_json(tmp / f"{name}.json", getattr(result, name))
    io.write_json(args.metrics, result.metrics)


if __name__ == "__main__":
    run_stage(main)
