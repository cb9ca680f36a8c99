"""int8 recipes side by side: quality against ONNX fp32 on several tuned models, speed and size on one.

For each pipeline model folder given (models/lora, a LoRA at another learning rate or seed, ...), the model is
exported to ONNX fp32 once and quantised by every method of `pairtune.export.INT8_METHODS`; each int8 graph
is scored on the eval split (AUC and Spearman delta against fp32, as the export stage checks them) and on dev
(the split a default may be chosen on). Speed: texts/s encoding the dev + eval texts at batch 64 and the
latency of one text, medians over rounds in which the methods alternate, on the first model only (weights do
not change the speed). Prints one JSON object; `--out` also writes it.
Run: python bench/quant.py --model models/lora --model models/full --data data/prepared [--out bench/quant.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pairtune import export, io, models
from pairtune import metrics as M
from pairtune.data import read_prepared
from pairtune.evaluation import unique_texts


def _quality(enc: export.OnnxEncoder, texts: list[str], pairs: list[dict[str, Any]], threshold: float) -> dict:
    index = {t: i for i, t in enumerate(texts)}
    s = M.pair_scores(enc.encode(texts), index, pairs)
    graded = np.array([p["label"] for p in pairs], dtype=float)
    return {"auc": M.auc(s, (graded >= threshold).astype(int)), "spearman": M.spearman(s, graded)}


def _speed(encoders: dict[str, export.OnnxEncoder], texts: list[str], rounds: int, single: int) -> dict:
    tput: dict[str, list[float]] = {k: [] for k in encoders}
    lat: dict[str, list[float]] = {k: [] for k in encoders}
    for enc in encoders.values():  # warm-up: first calls allocate and pick kernels
        enc.encode(texts[:64])
        enc.encode(texts[:1])
    for r in range(rounds):
        for name in list(encoders) if r % 2 == 0 else list(reversed(encoders)):
            enc = encoders[name]
            start = time.perf_counter()
            enc.encode(texts, 64)
            tput[name].append(len(texts) / (time.perf_counter() - start))
            for t in texts[:single]:
                start = time.perf_counter()
                enc.encode([t])
                lat[name].append((time.perf_counter() - start) * 1e3)
    return {k: {"texts_per_s": round(statistics.median(tput[k]), 1),
                "latency_ms_p50": round(float(np.percentile(lat[k], 50)), 2)} for k in encoders}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="pipeline model folder (repeat)")
    ap.add_argument("--data", action="append", help="prepared data folder per model (default data/prepared)")
    ap.add_argument("--methods", default=",".join(export.INT8_METHODS))
    ap.add_argument("--calibration", type=int, default=256, help="dev texts the static methods calibrate on")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--single", type=int, default=50, help="single-text calls per round for the latency")
    ap.add_argument("--positive-threshold", type=float, default=0.5)
    ap.add_argument("--out")
    args = ap.parse_args()
    methods = args.methods.split(",")
    data = args.data or ["data/prepared"] * len(args.model)
    result: dict[str, Any] = {"methods": methods, "models": {}}
    with tempfile.TemporaryDirectory(prefix="pairtune-quant-") as scratch:
        for k, (folder, data_dir) in enumerate(zip(args.model, data, strict=True)):
            dev, eval_ = read_prepared(f"{data_dir}/dev.jsonl"), read_prepared(f"{data_dir}/eval.jsonl")
            out = Path(scratch) / f"m{k}"
            st = models.load_model(folder, "cpu")
            models.save_full(st, out)
            standalone = models.load_st(str(out), "cpu")
            export.export_onnx(standalone, out / export.ONNX_FP32, 18)
            (out / export.SPEC).write_text(json.dumps(export.pipeline_spec(standalone)), encoding="utf-8")
            fp32 = export.OnnxEncoder.load(out)
            dev_texts, eval_texts = unique_texts(dev), unique_texts(eval_)
            calib_texts = dev_texts[:args.calibration]
            calibration = list(fp32.feeds(calib_texts, 32))
            ref = {"eval": _quality(fp32, eval_texts, eval_, args.positive_threshold),
                   "dev": _quality(fp32, dev_texts, dev, args.positive_threshold)}
            row: dict[str, Any] = {"fp32": ref, "bytes_fp32": (out / export.ONNX_FP32).stat().st_size}
            encoders = {"fp32": fp32}
            for method in methods:
                path = out / "onnx" / f"model_{method}.onnx"
                start = time.perf_counter()
                export.quantize_int8(out / export.ONNX_FP32, path, method, True, calibration)
                enc = export.OnnxEncoder.load(out, f"onnx/model_{method}.onnx")
                encoders[method] = enc
                q = {split: _quality(enc, t, p, args.positive_threshold)
                     for split, t, p in (("eval", eval_texts, eval_), ("dev", dev_texts, dev))}
                row[method] = {f"{split}_{m}_delta": round(abs(q[split][m] - ref[split][m]), 5)
                               for split in q for m in ("auc", "spearman")}
                row[method].update(bytes=path.stat().st_size, quantise_s=round(time.perf_counter() - start, 1))
                print(folder, method, row[method], flush=True)
            if k == 0 and args.rounds > 0:
                result["speed"] = _speed(encoders, unique_texts(dev, eval_), args.rounds, args.single)
                result["speed_texts"] = len(unique_texts(dev, eval_))
            result["models"][folder] = row
    print(json.dumps(result))
    if args.out:
        io.write_json(args.out, result)


if __name__ == "__main__":
    main()
