"""The full (learning rate x alpha) sweep the pipeline's operating point is measured against (#32).

For each method and each learning rate of its `tune` grid: train at full length (stages/train.py, the
params' recipe, that rate fixed), then run the interpolate stage on it (the alpha grid, dev + general, the
chosen alpha scored once on eval). From the curves it reports, per method:
- the search's trial ranking (plots/tune/<mode>/trials.json of the committed run) against the full-length
  ranking by dev AUC at alpha 1: does a 69-step trial pick what full-length training would?
- the pipeline's operating point (tune's lr, then interpolate's alpha) against the point the same rule
  (`interpolate.rule`, `max_auc_drop`) picks over the whole lr x alpha grid at once, on dev + general;
- each lr's own chosen alpha with its eval AUC and retention (the interpolate stage's figures).
- whether the descending alpha search (`interpolate.search: descend`, which scores only alpha 0 and the grid
  from 1 down to the first point off the dev-AUC plateau) chooses what the whole grid does: each curve here is
  scored on the whole grid (search: grid) and the descent is replayed on it with the stage's own code.
Each run goes into bench/operating.json under its --label (the other runs there are kept), each lr's whole
alpha curve included. Needs `make repro` first (data/prepared, models/base, the tune and interpolate records)
in this checkout or in --workspace (a clone run at other params: another data seed, a harder demo).
Run: python bench/operating.py --label "demo, seed 42" [--modes full lora] [--seed N] [--workspace DIR]
     [--reuse] [--extra lora=8e-3]
     (~12 min a run on 2 cores); python bench/operating.py --replay: the descent replayed on every stored curve
     with this checkout's code and params (seconds)
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
from pairtune import interpolation as I  # noqa: E402
from pairtune.params import Interpolate  # noqa: E402


def _stage(ws: Path, script: str, *argv: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / script), *argv], cwd=ws, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")


def joint_choice(points: list[dict], max_drop: float) -> dict:
    """interpolate.rule auc_drop over every (lr, alpha): the most general retention among points whose dev AUC
    is within max_drop of the best point's (ties: the higher dev AUC)."""
    best = max(p["dev_auc"] for p in points)
    near = [p for p in points if p["dev_auc"] >= best - max_drop]
    return max(near, key=lambda p: (p["retention"], p["dev_auc"]))


def descend_check(curve: list[dict], cfg: Interpolate) -> dict:
    """The descending search replayed on a whole-grid curve: its choice, whether the grid's is the same, and
    how many of the grid's points it scores."""
    by = {r["alpha"]: {"dev_auc": float("nan"), **r} for r in curve}
    walked = I.walk(sorted(by), by.__getitem__, I.stop_below(cfg))
    grid, desc = I.choose(list(by.values()), cfg)[0], I.choose(walked, cfg)[0]
    return {"alpha": desc, "same": desc == grid, "scored": len(walked), "grid_points": len(by)}


def replay(path: Path) -> None:
    """Recompute every stored curve's descend check with this checkout's code and params.yaml's rule."""
    icfg = YAML(typ="safe").load((ROOT / "params.yaml").read_text())["interpolate"]
    cfg = Interpolate(**icfg)
    doc = json.loads(path.read_text())
    for run in doc["runs"].values():
        for m in run["modes"].values():
            for r in m["per_lr"]:
                if "curve" in r:  # runs before 2026-12-05 kept only each lr's chosen point
                    r["descend"] = descend_check(r["curve"], cfg)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    checks = [r["descend"] for run in doc["runs"].values() for m in run["modes"].values() for r in m["per_lr"]
              if r.get("descend")]
    print(f"descend: same choice on {sum(c['same'] for c in checks)} of {len(checks)} curves, scoring "
          f"{sum(c['scored'] for c in checks)} of {sum(c['grid_points'] for c in checks)} grid points")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["full", "lora"])
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: params.yaml's)")
    ap.add_argument("--workspace", type=Path, default=ROOT, help="a checkout whose pipeline ran (default: this one)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/operating.json")
    ap.add_argument("--label", help='what the run is, e.g. "demo, seed 42"')
    ap.add_argument("--replay", action="store_true", help="only replay the descent on the stored curves")
    ap.add_argument("--extra", action="append", default=[], metavar="MODE=LR,LR",
                    help="more rates to sweep for a mode, besides its grid and every rate its search tried")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the stored rows of this --label's rates (same data, seed and recipe) and train only "
                         "the rates it lacks")
    args = ap.parse_args()
    if args.replay:
        return replay(args.out)
    if not args.label:
        ap.error("--label is required")
    ws = args.workspace.resolve()
    yaml = YAML(typ="safe")
    params = yaml.load((ws / "params.yaml").read_text())
    seed = params["seed"] if args.seed is None else args.seed
    icfg = params["interpolate"]
    cfg = Interpolate(**{"search": "descend", **icfg})
    out: dict = {"date": date.today().isoformat(), "machine": hardware.machine("cpu").describe() + f", {os.cpu_count()} cores",
                 "seed": seed, "data": {"seed": params["seed"], "generate": params["generate"]},
                 "rule": f"{params['interpolate']['rule']}, max_auc_drop {params['interpolate']['max_auc_drop']}",
                 "modes": {}}
    extra = {m: [float(x) for x in lrs.split(",")] for m, lrs in (e.split("=", 1) for e in args.extra)}
    stored = json.loads(args.out.read_text()).get("runs", {}).get(args.label, {}) if args.reuse and args.out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            trials = json.loads((ws / f"plots/tune/{mode}/trials.json").read_text())
            committed = json.loads((ws / f"metrics/interpolate/{mode}.json").read_text())
            rows, points = [], []
            # the grid, every rate the search tried (past the grid too) and any asked for
            rates = sorted({*params["tune"][mode], *(t["lr"] for t in trials["trials"]), *extra.get(mode, [])})
            # rows stored with their whole alpha curve and eval interval (older runs kept less: trained again)
            kept = {r["lr"]: r for r in stored.get("modes", {}).get(mode, {}).get("per_lr", [])
                    if "curve" in r and "eval_auc_at_chosen_ci" in r}
            if kept and stored.get("seed") != seed:
                raise SystemExit(f"--reuse: the stored {args.label!r} run trained at seed {stored.get('seed')}, not {seed}")
            for lr in sorted({*rates, *kept}):
                trial = [t["dev_auc"] for t in trials["trials"] if t["lr"] == lr]
                if lr in kept:  # trained before at this data, seed and recipe: its curve stands
                    rows.append({**kept[lr], "trial_dev_auc": trial[-1] if trial else None})
                    points += [{"lr": lr, "alpha": r["alpha"], "dev_auc": r["dev_auc"], "retention": r["retention"]}
                               for r in kept[lr]["curve"] if "retention" in r]
                    continue
                p = copy.deepcopy(params)
                p["seed"] = seed
                p["train"][mode]["lr"] = lr
                if "search" in p["interpolate"]:
                    p["interpolate"]["search"] = "grid"  # the whole curve: the descent is replayed on it
                pfile = Path(tmp) / f"params_{mode}_{lr:g}.yaml"
                with pfile.open("w") as fh:
                    yaml.dump(p, fh)
                work = Path(tmp) / f"{mode}_{lr:g}"
                t0 = time.perf_counter()
                _stage(ws, "train.py", "--mode", mode, "--data", "data/prepared", "--base", "models/base",
                       "--out", str(work / "model"), "--metrics", str(work / "train.json"), "--live",
                       str(work / "live"), "--params", str(pfile))
                train_s = time.perf_counter() - t0
                _stage(ws, "interpolate.py", "--base", "models/base", "--model", str(work / "model"), "--data",
                       "data/prepared", "--out", str(work / "interpolated"), "--metrics", str(work / "interp.json"),
                       "--plots", str(work / "plots"), "--params", str(pfile))
                m = json.loads((work / "interp.json").read_text())
                curve = json.loads((work / "plots/curve.json").read_text())
                tuned = next(r for r in curve if r["alpha"] == 1.0)
                rows.append({"lr": lr, "trial_dev_auc": trial[-1] if trial else None, "dev_auc_alpha1": tuned["dev_auc"],
                             "retention_alpha1": m.get("retention_tuned"), "chosen_alpha": m["alpha"],
                             "dev_auc_at_chosen": m["dev_auc"], "eval_auc_at_chosen": m["eval_auc"],
                             "retention_at_chosen": m.get("retention"),
                             "retention_at_chosen_ci": [m.get("retention_ci_low"), m.get("retention_ci_high")],
                             "eval_auc_at_chosen_ci": [m.get("eval_auc_ci_low"), m.get("eval_auc_ci_high")],
                             "train_s": round(train_s, 1), "descend": descend_check(curve, cfg), "curve": curve})
                points += [{"lr": lr, "alpha": r["alpha"], "dev_auc": r["dev_auc"], "retention": r["retention"]}
                           for r in curve if "retention" in r]
                print(json.dumps({mode: rows[-1]}), flush=True)
            joint = joint_choice(points, params["interpolate"]["max_auc_drop"])
            at_joint = next(r for r in rows if r["lr"] == joint["lr"])
            known = abs(at_joint["chosen_alpha"] - joint["alpha"]) < 1e-9 and "eval_auc_at_chosen_ci" in at_joint
            out["modes"][mode] = {
                "per_lr": rows,
                "pipeline": {"lr": trials["lr"], "alpha": committed["alpha"],
                             "dev_auc": committed["dev_auc"], "eval_auc": committed["eval_auc"],
                             "retention": committed.get("retention"),
                             "eval_auc_ci": [committed["eval_auc_ci_low"], committed["eval_auc_ci_high"]],
                             "retention_ci": [committed.get("retention_ci_low"), committed.get("retention_ci_high")],
                             "train_s": json.loads((ws / f"metrics/train/{mode}.json").read_text())[mode]["train_s"]},
                # the interval of the joint point is known where it is its lr's own interpolate choice
                "joint": {**joint, **({"eval_auc": at_joint["eval_auc_at_chosen"],
                                       "eval_auc_ci": at_joint["eval_auc_at_chosen_ci"],
                                       "retention_ci": at_joint["retention_at_chosen_ci"]}
                                      if known else {})},
                "search_s": json.loads((ws / f"metrics/tune/{mode}.json").read_text())[mode]["search_s"],
                "trial_order": [r["lr"] for r in sorted(rows, key=lambda r: -(r["trial_dev_auc"] or 0))
                                if r["trial_dev_auc"] is not None],
                "extended": trials.get("extended", []),
                # over the rates the search tried, so the two orders rank the same set
                "full_length_order": [r["lr"] for r in sorted(rows, key=lambda r: -r["dev_auc_alpha1"])
                                      if r["trial_dev_auc"] is not None],
            }
    path = args.out
    runs = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
    runs[args.label] = out
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
