"""export: write a tuned model as a standalone SentenceTransformer folder, ONNX fp32 and ONNX int8.

Loads the model through the guarded loader (a LoRA adapter is merged), writes the exports and checks their
parity against it on the dev and eval texts. A gap in the standalone folder fails the stage and writes
nothing (a broken model stops the run); an ONNX fp32 or int8 variant over its tolerance is left out and
its status says why (metrics, model card, pairtune.json), unless `export.strict` makes it fail the stage.
Reads params `export.*`, `data.positive_threshold`, `data.positive_name`, `data.negative_name`, `evaluate.batch_size`, `evaluate.confidence`,
<model>/, <data>/{train,dev,eval}.jsonl and <evaluate> (the metrics the model card quotes; beside it, evaluate's
embeddings of the same texts, used as the reference instead of encoding again where their key matches; for
--chosen, interpolate's encode of its chosen model in --chosen-plots).
Writes <out>/ (standalone folder + onnx/ + model card + dev threshold) and <metrics> (parity and sizes).
Which model: `export.operating_point` picks between --tuned (alpha 1, figures in --tuned-evaluate) and --chosen
(the interpolate stage's operating point, figures in --chosen-metrics); --trained (DVCLive's train.json) gives
the learning rate for the model card. Or --model and --evaluate export one folder as given.
Run: python stages/export.py --model models/lora --data data/prepared --evaluate plots/evaluate/lora/details.json \
         --out models/export/lora --metrics metrics/export/lora.json
"""

from __future__ import annotations

import _checkout  # noqa: F401 (first: this checkout's src/, whatever pairtune is installed)
import argparse
import json
import logging
from pathlib import Path

import numpy as np

from pairtune import export, io, models, params
from pairtune.data import read_prepared
from pairtune.errors import PairtuneError, run_stage, setup_logging
from pairtune.evaluation import EMBEDDINGS, embeddings_key, stored_embeddings, unique_texts

log = logging.getLogger("export")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--data", "--out", "--metrics"):
        ap.add_argument(flag, required=True)
    # One model as given (--model, with its eval figures in --evaluate), or, as dvc.yaml runs it, both
    # candidates and `export.operating_point` picks: the model as trained (--tuned, alpha 1) or the operating
    # point the interpolate stage chose on dev + general (--chosen, its figures in --chosen-metrics).
    for flag in ("--model", "--evaluate", "--tuned", "--tuned-evaluate", "--chosen", "--chosen-metrics", "--chosen-plots",
                 "--trained"):
        ap.add_argument(flag)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    setup_logging()
    p = params.load(args.params)
    source, evaluate_path, operating, stored = _pick(args, p.export.operating_point)
    dev, eval_ = read_prepared(f"{args.data}/dev.jsonl"), read_prepared(f"{args.data}/eval.jsonl")
    n_train = len(read_prepared(f"{args.data}/train.jsonl"))
    evaluate = json.loads(Path(evaluate_path).read_text(encoding="utf-8"))
    evaluate = evaluate.get("metrics", evaluate)  # evaluate's details.json, or a flat file (interpolate's)
    if "auc" not in evaluate and "eval_auc" in evaluate:  # interpolate's: its eval figures are eval_*
        evaluate = {k.removeprefix("eval_"): v for k, v in evaluate.items() if k.startswith("eval_")}
    model = models.load_model(source, "cpu")  # exports are CPU artefacts, parity is checked on the CPU
    ref = _reusable(stored, unique_texts(dev, eval_), source, p.evaluate.batch_size)
    with io.atomic_dir(args.out) as tmp:
        figures = export.build(model, Path(source), tmp, dev, eval_, n_train, evaluate, p.export,
                               p.data.positive_threshold, p.evaluate.batch_size, p.evaluate.confidence,
                               p.data.class_names, ref, operating)
        models.load_model(tmp, "cpu")  # the export passes the same guard as the model it came from
    log.info("export: %s; standalone max |delta| %.2e", ", ".join(f"{v} {s}" for v, s in figures["status"].items()),
             figures["standalone_max_abs"])
    if "int8_auc" in figures:
        log.info("int8 eval AUC %.4f vs %.4f fp32, Spearman %.4f vs %.4f", figures["int8_auc"], figures["onnx_auc"],
                 figures["int8_spearman"], figures["onnx_spearman"])
    io.write_json(args.metrics, figures)


def _pick(args: argparse.Namespace, point: str) -> tuple[str, str, dict[str, float], Path | None]:
    """The folder to export, the file of its eval figures, its operating point (lr, alpha, retention) and the
    folder that may hold its stored encode (evaluate's or interpolate's)."""
    both = {"--tuned": args.tuned, "--tuned-evaluate": args.tuned_evaluate, "--chosen": args.chosen,
            "--chosen-metrics": args.chosen_metrics}
    if args.model:
        if any(both.values()) or not args.evaluate:
            raise PairtuneError("export: give --model with --evaluate, or --tuned, --tuned-evaluate, --chosen and "
                                "--chosen-metrics (as dvc.yaml does), not a mix")
        return args.model, args.evaluate, {}, Path(args.evaluate).parent
    if missing := [flag for flag, v in both.items() if not v]:
        raise PairtuneError(f"export: missing {', '.join(missing)} (or give --model and --evaluate)")
    interp = json.loads(Path(args.chosen_metrics).read_text(encoding="utf-8"))
    op: dict[str, float] = {}
    if args.trained:
        op["lr"] = json.loads(Path(args.trained).read_text(encoding="utf-8"))["lr"]
    # retention at this alpha (general Spearman / the base's), where the general set was used
    key = "retention" if point == "chosen" else "retention_tuned"
    op.update({k.replace(key, "retention"): v for k, v in interp.items()
               if k in (key, f"{key}_ci_low", f"{key}_ci_high")})
    if point == "chosen":
        op["alpha"] = interp["alpha"]
        log.info("export.operating_point chosen: %s (alpha %g, chosen on dev + general)", args.chosen, interp["alpha"])
        return args.chosen, args.chosen_metrics, op, Path(args.chosen_plots) if args.chosen_plots else None
    op["alpha"] = 1.0
    log.info("export.operating_point tuned: %s (alpha 1, the model as trained)", args.tuned)
    return args.tuned, args.tuned_evaluate, op, Path(args.tuned_evaluate).parent


def _reusable(folder: Path | None, texts: list[str], model: str, batch_size: int) -> np.ndarray | None:
    """The stored CPU encode of `texts` by this model in these batches, if `folder` has it (else None: the export
    encodes them itself; an encode on a GPU gives CUDA's numbers, which parity must not use)."""
    if folder is None:
        return None
    ref = stored_embeddings(folder, embeddings_key(texts, models.identity(model), "cpu", batch_size))
    if ref is not None:
        log.info("reference embeddings: %s (the same %d texts, encoded by an earlier stage)", folder / EMBEDDINGS,
                 len(texts))
    return ref


if __name__ == "__main__":
    run_stage(main)
