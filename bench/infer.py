"""Inference speed of an export folder: PyTorch fp32 vs ONNX fp32 vs ONNX int8, side by side in one process.

Throughput: texts/s encoding the dev + eval texts at batch 64. Latency: one text at a time (ms, median and
90th percentile). Backends alternate round by round so drift on a shared machine hits all three alike.
Prints one JSON line (run by bench/run.py --inference, which names the machine).
Run: python bench/infer.py --model models/export/lora --data data/prepared [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from pairtune import export, models
from pairtune.data import read_prepared
from pairtune.evaluation import unique_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/export/lora")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--single", type=int, default=100, help="single-text calls per round for the latency")
    args = ap.parse_args()
    texts = unique_texts(read_prepared(f"{args.data}/dev.jsonl"), read_prepared(f"{args.data}/eval.jsonl"))
    import torch

    st = models.load_model(args.model)
    encoders = {"torch_fp32": lambda batch: models.embed(st, batch, 64),
                "onnx_fp32": export.OnnxEncoder.load(args.model, export.ONNX_FP32).encode,
                "onnx_int8": export.OnnxEncoder.load(args.model, export.ONNX_INT8).encode}
    singles = texts[: args.single]
    tput: dict[str, list[float]] = {k: [] for k in encoders}
    lat: dict[str, list[float]] = {k: [] for k in encoders}
    for fn in encoders.values():  # warm-up: first calls allocate and pick kernels
        fn(texts[:64])
        fn(texts[:1])
    for r in range(args.rounds):
        order = list(encoders) if r % 2 == 0 else list(reversed(encoders))
        for name in order:
            fn = encoders[name]
            start = time.perf_counter()
            fn(texts)
            tput[name].append(len(texts) / (time.perf_counter() - start))
            for t in singles:
                start = time.perf_counter()
                fn([t])
                lat[name].append((time.perf_counter() - start) * 1e3)
    out = {"texts": len(texts), "rounds": args.rounds, "torch_threads": torch.get_num_threads(),
           "model": str(Path(args.model)), "backends": {}}
    for name in encoders:
        out["backends"][name] = {"texts_per_s": statistics.median(tput[name]),
                                 "latency_ms_p50": float(np.percentile(lat[name], 50)),
                                 "latency_ms_p90": float(np.percentile(lat[name], 90)),
                                 "bytes": (Path(args.model) / {"torch_fp32": "model.safetensors",
                                                               "onnx_fp32": export.ONNX_FP32,
                                                               "onnx_int8": export.ONNX_INT8}[name]).stat().st_size}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
