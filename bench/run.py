"""Benchmark pairtune's training against the plain sentence-transformers script, side by side.

Runs bench/reference.py and bench/ours.py alternately (full and LoRA, --runs each, order swapped every
round), then times an end-to-end `dvc repro` from a clean clone, a no-op `dvc repro` and the evaluate
stage. Prints a table and writes bench/results.json with medians, ratios and the quality check
(eval AUC within 0.005 and Spearman within 0.01 of the reference).
Run: make bench            (or: python bench/run.py --quick   for a smoke run;
     python bench/run.py --ablation   for the cost of turning each speed knob off;
     python bench/run.py --inference  for PyTorch vs ONNX fp32 vs ONNX int8 serving an export folder;
     python bench/run.py --ddp        for train.processes 2 vs 1, DDP through torchrun;
     python bench/run.py --scale      for every stage at 10x and 100x the demo data)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUC_TOL, SPEARMAN_TOL = 0.005, 0.01


# `--isa avx2`: every child process runs as on a CPU without AVX-512 or native bf16. oneDNN (bf16 matmuls)
# and ATen honour these standard knobs, and pairtune.hardware reads them; MKL's (fp32 GEMMs) keeps the
# reference's fp32 path on AVX2 as well. `_bf16_cost` checks that the slow path is really reproduced.
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
_ISA: dict[str, str] = {}


def _env(cwd: Path = ROOT) -> dict[str, str]:
    """Child environment; in a clone, its own src/ comes first, so its stages run the clone's pairtune and not
    the editable install's (this working tree, which may differ from the commit or change during a run)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **_ISA)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    if Path(cwd).resolve() != ROOT and (Path(cwd) / "src" / "pairtune").is_dir():
        env["PYTHONPATH"] = os.pathsep.join([str(Path(cwd).resolve() / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


# Seconds of a bf16-autocast vs an fp32 MLP forward+backward (BERT's feed-forward shape, 416 tokens).
_BF16_COST = """
import json, time, torch
from pairtune import hardware
lin = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384))
x = torch.randn(416, 384, requires_grad=True)
def run(bf16, n):
    t = time.perf_counter()
    for _ in range(n):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = lin(x)
        y.float().sum().backward()
    return (time.perf_counter() - t) / n
run(False, 3), run(True, 3)
fp32, bf16 = min(run(False, 10) for _ in range(3)), min(run(True, 10) for _ in range(3))
m = hardware.machine("cpu")
print(json.dumps({"fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3, "bf16_over_fp32": bf16 / fp32,
                  "machine": m.describe(), "cpu": m.name, "flags": list(m.flags), "native_bf16": m.native_bf16,
                  "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "cuda_devices": torch.cuda.device_count()}))
"""


def machine_info() -> dict:
    """The machine every figure was measured on (as the child processes see it), and what bf16 costs there."""
    return _json_run([sys.executable, "-c", _BF16_COST]) | {"cores": os.cpu_count(), "isa_env": dict(_ISA),
                                                          "python": platform.python_version()}


def _json_run(cmd: list[str], cwd: Path = ROOT) -> dict:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=_env(cwd), check=True, capture_output=True)
    return time.perf_counter() - start


# Run `cmd` in a fresh Python process and print its descendants' peak RSS: this process's own
# RUSAGE_CHILDREN would also count the training benchmark runs that came before.
_PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _timed_peak(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MB) of any process `cmd` started (each DVC stage, here)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PEAK, *cmd], cwd=cwd, env=_env(cwd), check=True,
                         capture_output=True, text=True).stdout
    return time.perf_counter() - start, int(out.split()[-1]) / 1024


def _clean_clone(tmp: str) -> Path:
    """A git clone of the repo in `tmp` without the pipeline's outputs, as a fresh checkout has it."""
    clone = Path(tmp) / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    for d in ("models", "data/prepared", "data/demo"):
        shutil.rmtree(clone / d, ignore_errors=True)
    return clone


KNOBS = ("bf16", "packing", "fast_dropout", "compact_embedding")  # train.* switches: speed, not the recipe


def _load_results(path: str) -> dict:
    """bench/results.json: one section per machine kind measured."""
    everything = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    return everything if "machines" in everything else {"machines": {}}  # older single-machine layout


def _section(args: argparse.Namespace, mach: dict, name: str) -> tuple[dict, dict]:
    """bench/results.json as read, and this machine kind's `name` section in it (emptied; machine recorded)."""
    everything = _load_results(args.out)
    results = everything["machines"].setdefault(_kind(mach, args.isa), {})
    results["machine"] = mach
    results[name] = {}
    return everything, results


def _kind(mach: dict, isa: str | None) -> str:
    """The machine kind a figure belongs to: the GPU that trains (train.device auto), else the CPU's bf16 path."""
    if mach.get("cuda"):  # the benchmark's training runs there (both scripts use CUDA when present)
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", mach["cuda"].lower()).strip("-")
    return "cpu-" + ("native-bf16" if mach["native_bf16"] else "no-native-bf16") + (f"-{isa}-restricted"
                                                                                  if isa else "")


def ablation(args: argparse.Namespace, runs: int, extra: list[str], mach: dict) -> None:
    """pairtune's training at its defaults ("all on": every knob `auto`), then with each knob off in turn,
    round-robin; slowdowns vs the defaults. A knob `auto` already left off here changes nothing."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    base = yaml.load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    variants = ["all on", *(f"{k} off" for k in KNOBS)]
    raw: dict[str, dict[str, list[dict]]] = {m: {v: [] for v in variants} for m in ("full", "lora")}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for v in variants:
            p = json.loads(json.dumps(base))
            if v != "all on":
                p["train"][v.removesuffix(" off")] = False
            files[v] = Path(tmp) / f"{v.replace(' ', '_')}.yaml"
            with files[v].open("w", encoding="utf-8") as fh:
                yaml.dump(p, fh)
        for r in range(runs):
            for mode in ("full", "lora"):
                for v in variants if r % 2 == 0 else variants[::-1]:
                    res = _json_run([sys.executable, "bench/ours.py", "--base", str(Path(args.base).resolve()),
                                     "--params", str(files[v]), "--mode", mode,
                                     "--data", str(Path(args.data).resolve()), *extra])
                    raw[mode][v].append(res)
                    print(f"run {r + 1}/{runs} {mode:4s} {v:16s} {res['wall_s']:7.1f} s  AUC {res['auc']:.4f}  "
                          f"Spearman {res['spearman']:.4f}  RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    everything, results = _section(args, mach, "ablation")
    print(f"\n{mach['machine']}")
    for mode, by in raw.items():
        med = {v: {k: statistics.median(x[k] for x in rs) for k in ("wall_s", "auc", "spearman", "peak_rss_mb")}
               for v, rs in by.items()}
        results["ablation"][mode] = {"runs": runs, "median": med, "raw": by,
                                     "slowdown_vs_all_on": {v: med[v]["wall_s"] / med["all on"]["wall_s"]
                                                            for v in variants}}
        print(f"{mode}: " + ", ".join(f"{v} {med[v]['wall_s']:.1f} s (x{med[v]['wall_s'] / med['all on']['wall_s']:.2f})"
                                      for v in variants))
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


def inference(args: argparse.Namespace, mach: dict) -> None:
    """bench/infer.py on an export folder: texts/s at batch 64 and single-text latency, three backends."""
    res = _json_run([sys.executable, "bench/infer.py", "--model", args.export, "--data", args.data,
                     "--rounds", str(1 if args.quick else 5)])
    everything, results = _section(args, mach, "inference")
    results["inference"] = res
    print(f"\n{_kind(mach, args.isa)}: {mach['machine']}; {res['texts']} texts, {res['rounds']} rounds, "
          f"{args.export}")
    base = res["backends"]["torch_fp32"]
    for name, b in res["backends"].items():
        print(f"{name:10s} {b['texts_per_s']:7.0f} texts/s at batch 64 (x{b['texts_per_s'] / base['texts_per_s']:.2f})"
              f"   single text p50 {b['latency_ms_p50']:6.2f} ms, p90 {b['latency_ms_p90']:6.2f} ms"
              f"   {b['bytes'] / 1e6:6.1f} MB")
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


# Eval AUC of a trained model folder, loaded through the guard (as every stage loads it).
_EVAL_AUC = """
import json, sys
import numpy as np
from pairtune import metrics, models
from pairtune.data import read_prepared
from pairtune.evaluation import unique_texts
ev = read_prepared(sys.argv[2] + "/eval.jsonl")
texts = unique_texts(ev)
s = metrics.pair_scores(models.embed(models.load_model(sys.argv[1], "cpu"), texts), {t: i for i, t in enumerate(texts)}, ev)
print(json.dumps({"auc": metrics.auc(s, np.array([p["label"] for p in ev]) >= 0.5)}))
"""


def ddp(args: argparse.Namespace, runs: int, mach: dict) -> None:
    """train.processes 2 vs 1 through the train stage itself (torchrun start-up included), alternating order:
    stage wall time, the trainer's own time, and the eval AUC of what each wrote."""
    from ruamel.yaml import YAML

    modes = [m for m in ("full", "lora") if m in args.modes.split(",")]
    raw: dict[str, dict[int, list[dict]]] = {m: {1: [], 2: []} for m in modes}
    with tempfile.TemporaryDirectory(prefix="pairtune-ddp-bench-") as tmp:
        yaml = YAML(typ="safe")
        params = yaml.load((ROOT / "params.yaml").read_text())
        for n in (1, 2):
            params["train"]["processes"] = n
            with open(f"{tmp}/params_{n}.yaml", "w") as fh:
                yaml.dump(params, fh)
        for r in range(runs):
            for mode in modes:
                for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                    out = f"{tmp}/{mode}_{n}_{r}"
                    wall = _timed([sys.executable, "stages/train.py", "--mode", mode, "--data", args.data, "--base",
                                   args.base, "--out", out, "--metrics", f"{out}.json", "--live", f"{out}_live",
                                   "--params", f"{tmp}/params_{n}.yaml"], ROOT)
                    res = {"stage_s": wall, "train_s": json.loads(Path(f"{out}.json").read_text())[mode]["train_s"],
                           **_json_run([sys.executable, "-c", _EVAL_AUC, out, args.data])}
                    raw[mode][n].append(res)
                    print(f"run {r + 1}/{runs} {mode:4s} processes {n}: stage {wall:6.1f} s, trainer "
                          f"{res['train_s']:6.1f} s, eval AUC {res['auc']:.4f}", flush=True)
    everything, results = _section(args, mach, "ddp")
    print(f"\n{_kind(mach, args.isa)}: {mach['machine']}; {mach['cores']} cores")
    for mode, by in raw.items():
        med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in by.items()}
        speedup = med[1]["stage_s"] / med[2]["stage_s"]
        results["ddp"][mode] = {"median": {str(n): m for n, m in med.items()}, "speedup_2_over_1": speedup,
                                "runs": runs, "raw": {str(n): rs for n, rs in by.items()}}
        print(f"{mode:4s}: 1 process {med[1]['stage_s']:.1f} s (trainer {med[1]['train_s']:.1f} s, AUC "
              f"{med[1]['auc']:.4f}); 2 processes {med[2]['stage_s']:.1f} s (trainer {med[2]['train_s']:.1f} s, "
              f"AUC {med[2]['auc']:.4f}) -> x{speedup:.2f}")
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


# Every stage in pipeline order, run one at a time (`dvc repro --single-item`) so each gets its own time and RSS.
SCALE_STAGES = ("generate", "prepare", "base", "train@full", "train@lora", "evaluate@full",
                "evaluate@lora", "interpolate@full", "interpolate@lora", "export@full", "export@lora", "report")
SCALE_MAX_STEPS = 20  # training is not what --scale measures: a small step budget (train.max_steps)
SCALE_SIZES = ("n_train", "n_dev", "n_eval")


def _scale_params(params: dict, factor: int) -> dict:
    """params.yaml with the demo data `factor` times the default sizes and training capped at a few steps."""
    p = json.loads(json.dumps(params))
    for key in SCALE_SIZES:
        p["generate"][key] = params["generate"][key] * factor
    p["train"]["max_steps"] = SCALE_MAX_STEPS
    return p


# Pairs and distinct texts per prepared split (embedding cost follows distinct texts, the rest follows pairs).
_SPLIT_SIZES = """
import json, sys
from pairtune.data import read_prepared
out = {}
for split in ("train", "dev", "eval"):
    pairs = read_prepared(f"data/prepared/{split}.jsonl")
    out[split] = {"pairs": len(pairs), "texts": len({t for p in pairs for t in (p["text_1"], p["text_2"])})}
print(json.dumps(out))
"""


def scale(args: argparse.Namespace, mach: dict) -> None:
    """Every stage of a clean clone at `--factors` times the demo data (training capped at SCALE_MAX_STEPS):
    wall seconds (DVC's own start-up included), peak RSS, and growth between the factors against the data's."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    factors = [int(f) for f in args.factors.split(",")]
    params = yaml.load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    runs: dict[str, dict] = {}
    for factor in factors:
        with tempfile.TemporaryDirectory(prefix="pairtune-scale-") as tmp:
            clone = _clean_clone(tmp)
            with (clone / "params.yaml").open("w", encoding="utf-8") as fh:
                yaml.dump(_scale_params(params, factor), fh)
            stages = {}
            for stage in SCALE_STAGES:
                wall, peak = _timed_peak(["dvc", "repro", "--single-item", stage], clone)
                stages[stage] = {"wall_s": round(wall, 1), "peak_rss_mb": round(peak)}
                print(f"x{factor:<4d} {stage:17s} {wall:7.1f} s  {peak:6.0f} MB", flush=True)
            sizes = _json_run([sys.executable, "-c", _SPLIT_SIZES], cwd=clone)
            files = {"report_html": "plots/report.html", "evaluate_lora_details": "plots/evaluate/lora/details.json"}
            runs[str(factor)] = {"stages": stages, "splits": sizes,
                                 "bytes": {k: (clone / v).stat().st_size for k, v in files.items()
                                           if (clone / v).exists()}}
    everything, results = _section(args, mach, "scale")
    results["scale"] = {"factors": factors, "max_steps": SCALE_MAX_STEPS, "runs": runs}
    if len(factors) > 1:
        lo, hi = str(factors[0]), str(factors[-1])
        data_growth = factors[-1] / factors[0]
        results["scale"]["growth"] = {s: runs[hi]["stages"][s]["wall_s"] / runs[lo]["stages"][s]["wall_s"]
                                      for s in SCALE_STAGES}
        print(f"\ngrowth x{factors[0]} -> x{factors[-1]} (data x{data_growth:g}):")
        for stage, g in results["scale"]["growth"].items():
            print(f"  {stage:17s} time x{g:5.2f}")
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 run, 1 epoch on 256 pairs (16 steps: fewer barely move a LoRA adapter off the base, and the load guard refuses it), no end-to-end repro, quality reported not enforced")
    ap.add_argument("--no-pipeline", action="store_true",
                    help="time training only, not the clean-clone `dvc repro` (bench/gpu.sh: CPU-bound, minutes)")
    ap.add_argument("--pipeline-only", action="store_true",
                    help="only the dvc repro / evaluate timings; other sections of --out are kept")
    ap.add_argument("--ablation", action="store_true",
                    help="only pairtune's training with each speed knob of params.yaml turned off in turn, "
                         "alternating, --runs runs each; other sections of --out are kept")
    ap.add_argument("--inference", action="store_true",
                    help="only the inference benchmark of --export (PyTorch vs ONNX fp32 vs int8); other "
                         "sections of --out are kept")
    ap.add_argument("--ddp", action="store_true",
                    help="only the train stage with train.processes 1 vs 2 (DDP through torchrun), alternating, "
                         "--runs runs each; other sections of --out are kept")
    ap.add_argument("--scale", action="store_true",
                    help="every stage on --factors times the demo data in a clean clone: time, peak RSS, growth")
    ap.add_argument("--factors", default="10,100", help="data sizes for --scale, as multiples of params.yaml's")
    ap.add_argument("--export", default="models/export/lora", help="export folder for --inference")
    ap.add_argument("--modes", default="full,lora", help="training modes to time (comma-separated)")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                    help="run as on a CPU without native bf16: cap oneDNN, ATen and MKL at AVX2 (see ISA_ENV)")
    args = ap.parse_args()
    _ISA.update(ISA_ENV.get(args.isa, {}))
    mach = machine_info()
    print(f"machine: {mach['machine']}; bf16 autocast costs x{mach['bf16_over_fp32']:.2f} of fp32 here"
          + (f" (restricted: {' '.join(f'{k}={v}' for k, v in _ISA.items())})" if _ISA else ""), flush=True)
    runs = 1 if args.quick else args.runs
    extra = ["--epochs", "1", "--limit", "256"] if args.quick else []
    if args.inference:
        if not (Path(args.export) / "onnx" / "model_qint8.onnx").exists():
            subprocess.run(["dvc", "repro", f"export@{Path(args.export).name}"], cwd=ROOT, env=_env(), check=True)
        inference(args, mach)
        return
    if args.scale:
        scale(args, mach)
        return
    if not (Path(args.base) / "pairtune.json").exists() and args.base == "models/base":
        subprocess.run(["dvc", "repro", "base"], cwd=ROOT, env=_env(), check=True)

    if args.ablation:
        ablation(args, runs, extra, mach)
        return
    if args.ddp:
        ddp(args, runs, mach)
        return
    modes = [m for m in ("full", "lora") if m in args.modes.split(",")]
    raw: dict[str, dict[str, list[dict]]] = {m: {"reference": [], "pairtune": []} for m in modes}
    for r in range(0 if args.pipeline_only else runs):
        for mode in modes:
            order = ("reference", "pairtune") if r % 2 == 0 else ("pairtune", "reference")
            for who in order:
                cmd = [sys.executable, "bench/reference.py"] if who == "reference" else [
                    sys.executable, "bench/ours.py", "--base", str(Path(args.base).resolve())]
                res = _json_run([*cmd, "--mode", mode, "--data", str(Path(args.data).resolve()), *extra])
                raw[mode][who].append(res)
                print(f"run {r + 1}/{runs} {mode:4s} {who:9s} {res['wall_s']:7.1f} s  AUC {res['auc']:.4f}  "
                      f"Spearman {res['spearman']:.4f}  RSS {res['peak_rss_mb']:.0f} MB", flush=True)

    # This machine kind's other sections (--ablation, --ddp, --inference, --scale) are kept as they were.
    everything, results = _section(args, mach, "pipeline" if args.pipeline_only else "training")
    if not args.pipeline_only:
        results |= {"runs": runs, "quick": args.quick}
        if not args.no_pipeline:
            results.pop("pipeline", None)  # refilled below unless --quick, which times no pipeline
    ok = True
    for mode, by in raw.items() if not args.pipeline_only else ():
        med = {who: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for who, rs in by.items()}
        d_auc = med["pairtune"]["auc"] - med["reference"]["auc"]
        d_sp = med["pairtune"]["spearman"] - med["reference"]["spearman"]
        quality = abs(d_auc) <= AUC_TOL and abs(d_sp) <= SPEARMAN_TOL
        ok &= quality
        results["training"][mode] = {"median": med, "speedup": med["reference"]["wall_s"] / med["pairtune"]["wall_s"],
                                     "auc_diff": d_auc, "spearman_diff": d_sp, "quality_within_tolerance": quality,
                                     "raw": by}
    if not args.quick and not args.no_pipeline:
        with tempfile.TemporaryDirectory() as tmp:
            clone = _clean_clone(tmp)
            e2e, peak = _timed_peak(["dvc", "repro", "--force"], clone)
            noop = statistics.median(_timed(["dvc", "repro"], clone) for _ in range(3))
            ev = _timed([sys.executable, "stages/evaluate.py", "--model", "models/lora", "--data", "data/prepared",
                         "--metrics", f"{tmp}/e.json", "--plots", f"{tmp}/plots"], clone)
        results["pipeline"] = {"end_to_end_repro_s": e2e, "noop_repro_s": noop, "evaluate_stage_s": ev,
                               "peak_stage_rss_mb": peak}
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(f"\n{_kind(mach, args.isa)}: {mach['machine']}")
    for mode, r in results.get("training", {}).items():
        m = r["median"]
        print(f"{mode:4s}: reference {m['reference']['wall_s']:.1f} s, pairtune {m['pairtune']['wall_s']:.1f} s "
              f"-> {r['speedup']:.2f}x; AUC diff {r['auc_diff']:+.4f}, Spearman diff {r['spearman_diff']:+.4f} "
              f"({'within' if r['quality_within_tolerance'] else 'OUTSIDE'} tolerance)")
    if "pipeline" in results:
        p = results["pipeline"]
        print(f"dvc repro from clean {p['end_to_end_repro_s']:.0f} s; no-op {p['noop_repro_s']:.2f} s; "
              f"evaluate stage {p['evaluate_stage_s']:.1f} s; peak stage RSS {p['peak_stage_rss_mb']:.0f} MB")
    print(f"wrote {args.out}")
    if not ok and not args.quick:
        raise SystemExit("quality outside tolerance")


if __name__ == "__main__":
    main()
