"""Seed spread measured: the verdict at seeds.n 1 and at N on the committed run (#32 point 4).

Runs stages/seeds.py for both methods at seeds.n N into a temporary folder (the committed run's learning rates
and operating points: plots/tune/<mode>/choice.json, plots/interpolate/<mode>/chosen.json), then the report
stage twice on the same inputs: as committed (seeds.n 1) and with the N seeds. Records each report's
operating-point figures (metrics/report.json's op_*: means over seeds and their seed-aware intervals at N; the
interpolate stage's own intervals at 1), each seed's point, and what the extra seeds cost against one training
run. Writes bench/seeds.json. Needs `make repro` first.
Run: python bench/seeds.py [--n 3]   (~(N - 1) training runs per method)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ruamel.yaml import YAML  # noqa: E402

from pairtune import hardware  # noqa: E402

KEYS = ("auc", "spearman", "retention")


def _run(script: str, *argv: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / script), *argv], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _figures(report: dict, interpolate: dict[str, dict]) -> dict:
    """The operating-point figures of one report: per method and LoRA minus full, each with its interval."""
    out: dict = {"seeds": int(report.get("op_seeds", 1))}
    for m in ("full", "lora"):
        for k in KEYS:
            if f"op_{m}_{k}" not in report:
                continue
            lo, hi = report.get(f"op_{m}_{k}_ci_low"), report.get(f"op_{m}_{k}_ci_high")
            if lo is None:  # one seed: the interpolate stage's interval (eval pairs / general pairs resampled)
                src = "eval_auc" if k == "auc" else k
                lo, hi = interpolate[m].get(f"{src}_ci_low"), interpolate[m].get(f"{src}_ci_high")
            out[f"{m}_{k}"] = [report[f"op_{m}_{k}"], lo, hi]
    for k in KEYS:
        if f"op_lora_vs_full_{k}_diff" in report:
            out[f"diff_{k}"] = [report[f"op_lora_vs_full_{k}_diff{s}"] for s in ("", "_ci_low", "_ci_high")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3, help="training seeds per method")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/seeds.json")
    args = ap.parse_args()
    yaml = YAML()
    params = yaml.load((ROOT / "params.yaml").read_text())
    interpolate = {m: json.loads((ROOT / f"metrics/interpolate/{m}.json").read_text()) for m in ("full", "lora")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params["seeds"]["n"] = args.n
        with (tmp / "params.yaml").open("w") as fh:
            yaml.dump(params, fh)
        plots = tmp / "plots"
        plots.mkdir()
        for child in (ROOT / "plots").iterdir():  # the committed run's plots, the seeds' own beside them
            if child.name != "seeds":
                os.symlink(child, plots / child.name)
        wall = {}
        for m in ("full", "lora"):
            wall[m] = round(_run("seeds.py", "--mode", m, "--data", "data/prepared", "--base", "models/base",
                                 "--tune", f"plots/tune/{m}/choice.json", "--chosen", f"plots/interpolate/{m}/chosen.json",
                                 "--out", str(plots / "seeds" / m), "--params", str(tmp / "params.yaml")), 1)
        reports = {}
        for n, pfile, pdir in ((1, ROOT / "params.yaml", ROOT / "plots"), (args.n, tmp / "params.yaml", plots)):
            _run("report.py", "--out", str(tmp / f"report_{n}.html"), "--metrics", str(tmp / f"report_{n}.json"),
                 "--params", str(pfile), "--plots-dir", str(pdir))
            reports[n] = json.loads((tmp / f"report_{n}.json").read_text())
        points = {m: json.loads((plots / "seeds" / m / "points.json").read_text()) for m in ("full", "lora")}
    train_s = {m: json.loads((ROOT / f"metrics/train/{m}.json").read_text())[m]["train_s"] for m in ("full", "lora")}
    out = {"date": date.today().isoformat(), "machine": hardware.machine("cpu").describe() + f", {os.cpu_count()} cores",
           "n": args.n, "seeds": points["full"]["seeds"],
           "lr": {m: points[m]["lr"] for m in points}, "alpha": {m: points[m]["alpha"] for m in points},
           "one": _figures(reports[1], interpolate), "many": _figures(reports[args.n], interpolate),
           "per_seed": {m: [{k: x[k] for k in ("seed", "eval_auc", "eval_spearman", "retention") if k in x}
                            for x in points[m]["extra"]] for m in points},
           "pipeline_seed": {m: {"eval_auc": interpolate[m]["eval_auc"], "retention": interpolate[m].get("retention")}
                             for m in points},
           "seeds_stage_s": wall, "train_s": train_s}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("one", "many", "seeds_stage_s")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
