"""Does an embedding depend on its batch company, and what does invariance cost? Side by side in one process.

For the packaged model on the demo's dev + eval + general texts (as `make repro` prepares them):
- padded batches (SentenceTransformer.encode) vs pairtune's `models.embed` (one token length a batch, eager
  attention): the largest change of any embedding component between the whole set and samples of it
  (subsets, reversed, batch sizes 2 / 7 / 64), and the encode time of the whole set, median of alternating
  rounds;
- ONNX dynamic int8 of the committed LoRA export, batched vs one text a run (what OnnxEncoder does for it);
- cluster purity (evaluate's UMAP + HDBSCAN) of the committed full model's eval embeddings under noise of
  1e-7, one layout per draw: how much one layout's figure moves.
Writes one machine's section of bench/invariance.json (the machine named with its CPU flags; run it once
as is and once with `--isa avx2` for the other CPU kind).
Run: python bench/invariance.py [--isa avx2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/invariance.json"
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def _texts() -> tuple[list[str], list[dict]]:
    from pairtune import params
    from pairtune.data import read_pairs, read_prepared
    from pairtune.evaluation import unique_texts

    p = params.load(ROOT / "params.yaml")
    dev, ev = read_prepared(ROOT / "data/prepared/dev.jsonl"), read_prepared(ROOT / "data/prepared/eval.jsonl")
    general = read_pairs(ROOT / p.general.path, p.general) if p.general.path else []
    return unique_texts(dev, ev, general), ev


def _company(encode, texts: list[str]) -> float:
    """Largest |change| of any component between the whole set's rows and the same texts' rows elsewhere."""
    import numpy as np

    whole = dict(zip(texts, encode(texts, 64), strict=True))
    rng = random.Random(0)
    worst = 0.0
    for subset, bs in [(texts[::-1], 2), (rng.sample(texts, 50), 7), (rng.sample(texts, 300), 64), (texts[:1], 64)]:
        got = encode(subset, bs)
        worst = max(worst, float(np.max(np.abs(got - np.stack([whole[t] for t in subset])))))
    return worst


def measure(rounds: int) -> dict:
    import numpy as np

    from pairtune import export, models
    from pairtune import metrics as M
    from pairtune import params

    texts, ev = _texts()
    base = models.load_base("packaged", "cpu")
    padded = lambda ts, bs: np.asarray(base.encode(ts, batch_size=bs, normalize_embeddings=True,  # noqa: E731
                                                   show_progress_bar=False), dtype=np.float32)
    invariant = lambda ts, bs: models.embed(base, ts, bs)  # noqa: E731
    out: dict = {"texts": len(texts)}
    out["max_abs_change_with_company"] = {"padded": _company(padded, texts), "pairtune": _company(invariant, texts)}
    times: dict[str, list[float]] = {"padded": [], "pairtune": []}
    for _ in range(rounds):  # alternating, so drift on a shared machine hits both alike
        for name, fn in (("padded", padded), ("pairtune", invariant)):
            start = time.perf_counter()
            fn(texts, 64)
            times[name].append(time.perf_counter() - start)
    out["encode_s_median"] = {k: statistics.median(v) for k, v in times.items()}
    out["encode_pairtune_over_padded"] = out["encode_s_median"]["pairtune"] / out["encode_s_median"]["padded"]

    folder = ROOT / "models/export/lora"
    if (folder / export.ONNX_INT8).exists():
        enc = export.OnnxEncoder.load(folder, export.ONNX_INT8)
        int8 = {"per_text": enc.per_text}
        if enc.per_text:
            sub = texts[:300]
            int8["per_text_max_abs_change_with_company"] = _company(lambda ts, bs: enc.encode(ts, bs), sub)
            enc.per_text = False
            int8["batched_max_abs_change_with_company"] = _company(lambda ts, bs: enc.encode(ts, bs), sub)
            for mode in (False, True):
                enc.per_text = mode
                start = time.perf_counter()
                enc.encode(sub, 64)
                int8[f"encode_s_{'per_text' if mode else 'batched'}"] = time.perf_counter() - start
        out["onnx_int8_lora"] = int8

    p = params.load(ROOT / "params.yaml")
    e = p.evaluate
    full = models.load_model(ROOT / "models/full")
    eval_texts = sorted({t for x in ev for t in (x["text_1"], x["text_2"])})
    emb = models.embed(full, eval_texts)
    points = M.pair_points(emb, {t: i for i, t in enumerate(eval_texts)}, ev)
    y = np.array([int(x["label"] >= p.data.positive_threshold) for x in ev])
    purity = []
    for draw in range(5):
        noise = np.random.default_rng(draw).standard_normal(points.shape).astype(np.float32) * 1e-7 if draw else 0
        purity.append(M.cluster_layout(points + noise, y, e.umap_neighbors, e.umap_min_dist, e.hdbscan_min_cluster,
                                       e.hdbscan_min_samples, p.seed)[0]["cluster_purity"])
    out["full_purity_one_layout_under_1e-7_noise"] = {"draws": purity, "min": min(purity), "max": max(purity)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", choices=sorted(ISA_ENV), help="cap the instruction set (the other CPU kind)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.rounds)))
        return
    sys.path.insert(0, str(ROOT / "bench"))
    import run  # the machine named as every bench file names it

    run._ISA.update(ISA_ENV.get(args.isa or "", {}))

    env = dict(os.environ, HF_HUB_OFFLINE="1", **ISA_ENV.get(args.isa or "", {}))
    proc = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds)], env=env,
                          capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    mach = run.machine_info()
    kind = "cpu-no-native-bf16-avx2-restricted" if args.isa else ("cpu-native-bf16" if mach["native_bf16"]
                                                                  else "cpu-no-native-bf16")
    data = json.loads(OUT.read_text()) if OUT.exists() else {"machines": {}}
    data["machines"][kind] = {"machine": mach["machine"], "date": time.strftime("%Y-%m-%d"), **result}
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps(data["machines"][kind], indent=2))


if __name__ == "__main__":
    main()
