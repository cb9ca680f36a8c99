"""The full (learning rate x alpha) sweep the pipeline's operating point is measured against (#32).

For each method and each learning rate of its `tune` grid: train at full length (stages/train.py, the
params' recipe, that rate fixed), then run the interpolate stage on it (the alpha grid, dev + general, the
chosen alpha scored once on eval). From the curves it reports, per method:
- the search's trial ranking (plots/tune_<mode>/trials.json of the committed run) against the full-length
  ranking by dev AUC at alpha 1: does a 69-step trial pick what full-length training would?
- the pipeline's operating point (tune's lr, then interpolate's alpha) against the point the same rule
  (`interpolate.rule`, `max_auc_drop`) picks over the whole lr x alpha grid at once, on dev + general;
- each lr's own chosen alpha with its eval AUC and retention (the interpolate stage's figures).
Writes bench/operating.json. Needs `make repro` first (data/prepared, models/base, the tune records).
Run: python bench/operating.py [--modes full lora] [--seed 42]  (~12 min on 2 cores)
"""

from __future__ import annotations

import argparse
import copy
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


def _stage(script: str, *argv: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / script), *argv], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")


def joint_choice(points: list[dict], max_drop: float) -> dict:
    """interpolate.rule auc_drop over every (lr, alpha): the most general retention among points whose dev AUC
    is within max_drop of the best point's (ties: the higher dev AUC)."""
    best = max(p["dev_auc"] for p in points)
    near = [p for p in points if p["dev_auc"] >= best - max_drop]
    return max(near, key=lambda p: (p["retention"], p["dev_auc"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["full", "lora"])
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: params.yaml's)")
    args = ap.parse_args()
    yaml = YAML(typ="safe")
    params = yaml.load((ROOT / "params.yaml").read_text())
    seed = params["seed"] if args.seed is None else args.seed
    out: dict = {"date": date.today().isoformat(), "machine": hardware.machine("cpu").describe() + f", {os.cpu_count()} cores",
                 "seed": seed,
                 "rule": f"{params['interpolate']['rule']}, max_auc_drop {params['interpolate']['max_auc_drop']}",
                 "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            trials = json.loads((ROOT / f"plots/tune_{mode}/trials.json").read_text())
            committed = json.loads((ROOT / f"metrics/interpolate_{mode}.json").read_text())
            rows, points = [], []
            for lr in params["tune"][mode]:
                p = copy.deepcopy(params)
                p["seed"] = seed
                p["train"][mode]["lr"] = lr
                pfile = Path(tmp) / f"params_{mode}_{lr:g}.yaml"
                with pfile.open("w") as fh:
                    yaml.dump(p, fh)
                work = Path(tmp) / f"{mode}_{lr:g}"
                t0 = time.perf_counter()
                _stage("train.py", "--mode", mode, "--data", "data/prepared", "--base", "models/base",
                       "--out", str(work / "model"), "--metrics", str(work / "train.json"), "--live",
                       str(work / "live"), "--params", str(pfile))
                train_s = time.perf_counter() - t0
                _stage("interpolate.py", "--base", "models/base", "--model", str(work / "model"), "--data",
                       "data/prepared", "--out", str(work / "interpolated"), "--metrics", str(work / "interp.json"),
                       "--plots", str(work / "plots"), "--params", str(pfile))
                m = json.loads((work / "interp.json").read_text())
                curve = json.loads((work / "plots/curve.json").read_text())
                tuned = next(r for r in curve if r["alpha"] == 1.0)
                trial = [t["dev_auc"] for t in trials["trials"] if t["lr"] == lr]
                rows.append({"lr": lr, "trial_dev_auc": trial[-1] if trial else None, "dev_auc_alpha1": tuned["dev_auc"],
                             "retention_alpha1": m.get("retention_tuned"), "chosen_alpha": m["alpha"],
                             "dev_auc_at_chosen": m["dev_auc"], "eval_auc_at_chosen": m["eval_auc"],
                             "retention_at_chosen": m.get("retention"),
                             "retention_at_chosen_ci": [m.get("retention_ci_low"), m.get("retention_ci_high")],
                             "train_s": round(train_s, 1)})
                points += [{"lr": lr, "alpha": r["alpha"], "dev_auc": r["dev_auc"], "retention": r["retention"]}
                           for r in curve if "retention" in r]
                print(json.dumps({mode: rows[-1]}), flush=True)
            joint = joint_choice(points, params["interpolate"]["max_auc_drop"])
            at_joint = next(r for r in rows if r["lr"] == joint["lr"])
            out["modes"][mode] = {
                "per_lr": rows,
                "pipeline": {"lr": trials["lr"], "alpha": committed["alpha"],
                             "dev_auc": committed["dev_auc"], "eval_auc": committed["eval_auc"],
                             "retention": committed.get("retention")},
                "joint": {**joint, "eval_auc": at_joint["eval_auc_at_chosen"]
                          if abs(at_joint["chosen_alpha"] - joint["alpha"]) < 1e-9 else None},
                "trial_order": [r["lr"] for r in sorted(rows, key=lambda r: -(r["trial_dev_auc"] or 0))],
                "full_length_order": [r["lr"] for r in sorted(rows, key=lambda r: -r["dev_auc_alpha1"])],
            }
    path = ROOT / "bench/operating.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
