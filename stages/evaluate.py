"""evaluate: score one tuned method's model on the eval split with the eight metrics (base: the base stage).

Loads the model through the guarded loader (a LoRA adapter merged and verified), encodes each unique dev
and eval text once, chooses thresholds on dev and reports on eval.
Reads params `seed`, `data.positive_threshold`, `evaluate.*`, <model>/ and <data>/{dev,eval}.jsonl.
Writes <metrics> (the headline numbers under the model's name, for `dvc exp show` / `dvc metrics diff`) and
<plots>/ (roc, scores, histogram, predictions, details: every figure, breakdowns, errors with their texts;
embeddings.npy + embeddings.json: the encode itself, which the export stage reuses instead of encoding again).
Run: python stages/evaluate.py --model models/lora --data data/prepared \
         --metrics metrics/evaluate/lora.json --plots plots/evaluate/lora
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
    score(params.load(args.params), args.model, args.data, args.metrics, args.plots, args.name)


def score(p: params.Params, model_dir: str, data: str, metrics: str, plots: str, name: str | None = None) -> None:
    """Load `model_dir` through the guard, evaluate it on <data>/{dev,eval}.jsonl, write <plots>/ and <metrics>
    (the base stage calls this for the base, in its own process: one process start fewer)."""
    dev, eval_ = read_prepared(f"{data}/dev.jsonl"), read_prepared(f"{data}/eval.jsonl")
    device = models.pick_device(p.train.device)
    model = models.load_model(model_dir, device)
    texts = unique_texts(dev, eval_)
    emb = models.embed(model, texts, p.evaluate.batch_size)
    key = embeddings_key(texts, models.identity(model_dir), str(device), p.evaluate.batch_size)
    result = evaluate(emb, {t: i for i, t in enumerate(texts)}, dev, eval_, p.evaluate,
                      p.data.positive_threshold, p.seed)
    with io.atomic_dir(plots) as tmp:
        for what in ("roc", "scores", "histogram", "predictions", "details"):
            io.write_json(tmp / f"{what}.json", getattr(result, what))
        save_embeddings(tmp, emb, key, str(device))  # interpolate and export reuse them
    io.write_json(metrics, {name or Path(model_dir).name: headline(result.metrics)})


if __name__ == "__main__":
    run_stage(main)
