"""evaluate: score one model (base, full or LoRA) on the eval split with the eight metrics.

Loads the model through the guarded loader (a LoRA adapter merged and verified), encodes each unique dev
and eval text once, chooses thresholds on dev and reports on eval.
Reads params `seed`, `data.positive_threshold`, `evaluate.*`, <model>/ and <data>/{dev,eval}.jsonl.
Writes <metrics> (the headline numbers under the model's name, for `dvc exp show` / `dvc metrics diff`) and
<plots>/ (roc, scores, histogram, predictions, details: every figure, breakdowns, errors with their texts;
embeddings.npy + embeddings.json: the encode itself, which the export stage reuses instead of encoding again).
Run: python stages/evaluate.py --model models/lora --data data/prepared \
         --metrics metrics/evaluate_lora.json --plots plots/evaluate_lora
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
from pathlib import Path

from pairtune import io, models, params
from pairtune.data import read_prepared
from pairtune.errors import run_stage, setup_logging
from pairtune.evaluation import embeddings_key, evaluate, headline, save_embeddings, unique_texts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--model", "--data", "--metrics", "--plots"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--name", help="key the headline metrics are filed under (default: the model folder's name)")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    dev, eval_ = read_prepared(f"{args.data}/dev.jsonl"), read_prepared(f"{args.data}/eval.jsonl")
    device = models.pick_device(p.train.device)
    model = models.load_model(args.model, device)
    texts = unique_texts(dev, eval_)
    emb = models.embed(model, texts, p.evaluate.batch_size)
    key = embeddings_key(texts, models.identity(args.model), str(device), p.evaluate.batch_size)
    result = evaluate(emb, {t: i for i, t in enumerate(texts)}, dev, eval_, p.evaluate,
                      p.data.positive_threshold, p.seed)
    with io.atomic_dir(args.plots) as tmp:
        for name in ("roc", "scores", "histogram", "predictions", "details"):
            io.write_json(tmp / f"{name}.json", getattr(result, name))
        save_embeddings(tmp, emb, key, str(device))  # interpolate and export reuse them
    io.write_json(args.metrics, {args.name or Path(args.model).name: headline(result.metrics)})


if __name__ == "__main__":
    run_stage(main)
