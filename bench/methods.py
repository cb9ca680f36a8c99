"""Every method params.yaml ships, each at its own operating point, on one dataset (#36): the measured comparison.

In a clone of this checkout's HEAD (sharing its DVC cache, so the committed run's stages are checked out, not
rerun), sets train.methods to every method section of params.yaml (or --methods) and runs `dvc repro`: each
method gets its own learning-rate search on dev, training, evaluation, interpolation (its alpha chosen on dev +
the general set) and export, as the pipeline gives any method. Records per method: the chosen lr and alpha,
eval AUC and general retention at the operating point with their intervals (the interpolate stage's), each
method minus full with the report's paired intervals, trainable parameters, the adapter or model size, and
what the search and the training cost. --dataset hard: the harder demo of bench/operating.py (difficulty up,
label noise 0.03), where every stage reruns. Results go into bench/methods.json under the dataset's label
(others kept); `make tables` renders them into docs/results.md.
--merge with --methods: only those rows are replaced, each marked with its own commit and date.
Run: python bench/methods.py --dataset demo|hard [--methods full lora dora [--merge]]
     (AMD EPYC, flags avx2 avx512f avx512_bf16, 2 cores, 2026-12-07, eight methods: 21 min on the demo, 37
     stages, full's and LoRA's restored from the committed run; 26 min on the harder demo, all 52 stages)
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

HARD = {"multi_clause": 0.3, "hedged": 0.4, "contrast": 0.3, "informal": 0.3, "label_noise": 0.03}
LABELS = {"demo": "demo, seed 42", "hard": "harder demo (difficulty up, label noise 0.03), seed 42"}


def _sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def _read(ws: Path, path: str) -> dict:
    return json.loads((ws / path).read_text())


def record(ws: Path, methods: list[str]) -> dict:
    """Per method: its operating point and cost, read from the run's own files."""
    report = _read(ws, "metrics/report.json")
    out = {}
    for m in methods:
        it, live = _read(ws, f"metrics/interpolate/{m}.json"), _read(ws, f"dvclive/train_{m}/train.json")
        row = {"lr": live["lr"], "alpha": it["alpha"],  # the rate it trained at (after any retry)
               "eval_auc": it["eval_auc"], "eval_auc_ci": [it["eval_auc_ci_low"], it["eval_auc_ci_high"]],
               "trainable_params": live["trainable_params"], "artifact_bytes": live["artifact_bytes"],
               "train_s": _read(ws, f"metrics/train/{m}.json")[m]["train_s"],
               "search_s": _read(ws, f"metrics/tune/{m}.json")[m]["search_s"],
               "kind": YAML(typ="safe").load((ws / "params.yaml").read_text())["train"][m]["method"]}
        trials = _read(ws, f"plots/tune/{m}/trials.json")
        row["trials"] = [{k: t[k] for k in ("lr", "rung", "steps", f"dev_{trials['metric']}", "retention") if k in t}
                         for t in trials.get("trials", [])]
        row["extended"] = trials.get("extended", [])
        if live.get("retried"):  # the search's choice came apart at full length (tune.retries)
            row.update(searched_lr=live["searched_lr"], retried=live["retried"])
        if "retention" in it:
            row.update(retention=it["retention"], retention_ci=[it["retention_ci_low"], it["retention_ci_high"]])
        for key in ("auc", "retention"):
            k = f"op_{m}_vs_full_{key}_diff"
            if k in report:
                row[f"minus_full_{key}"] = [report[k], report[f"{k}_ci_low"], report[f"{k}_ci_high"]]
        out[m] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(LABELS), default="demo")
    ap.add_argument("--methods", nargs="+", help="default: every method section of params.yaml, full first")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/methods.json")
    ap.add_argument("--merge", action="store_true", help="replace only these methods' rows of the dataset's record "
                    "(each marked with this run's commit and date); default: the record is replaced")
    args = ap.parse_args()
    commit = _sh(ROOT, "git", "rev-parse", "--short", "HEAD").strip()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "repo"
        _sh(ROOT, "git", "clone", "-q", str(ROOT), str(ws))
        _sh(ws, "dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache"))
        _sh(ws, "dvc", "checkout", "-q")  # the committed run: its stages are not rerun
        yaml = YAML()
        params = yaml.load((ws / "params.yaml").read_text())
        methods = args.methods or ["full", "lora", *(k for k, v in params["train"].items()
                                                     if isinstance(v, dict) and k not in ("full", "lora"))]
        params["train"]["methods"] = methods
        if args.dataset == "hard":
            params["generate"]["difficulty"].update(HARD)
        with (ws / "params.yaml").open("w") as fh:
            yaml.dump(params, fh)
        start = time.perf_counter()
        log = _sh(ws, "dvc", "repro")
        wall = round(time.perf_counter() - start, 1)
        rows = record(ws, methods)
    ran = [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]
    runs = json.loads(args.out.read_text())["runs"] if args.out.exists() else {}
    if args.merge and LABELS[args.dataset] in runs:
        kept = runs[LABELS[args.dataset]]
        today = date.today().isoformat()
        kept["methods"].update({m: {**r, "commit": commit, "date": today, "repro_s": wall, "stages_run": ran}
                                for m, r in rows.items()})
        args.out.write_text(json.dumps({"runs": runs}, indent=2, sort_keys=True) + "\n")
        print(f"merged {', '.join(rows)} into {args.out} ({len(ran)} stages in {wall:.0f} s)")
        return
    runs[LABELS[args.dataset]] = {
        "date": date.today().isoformat(), "commit": commit,
        "machine": hardware.machine("cpu").describe() + f", {os.cpu_count()} cores",
        "difficulty": dict(params["generate"]["difficulty"]), "methods": rows, "stages_run": ran, "repro_s": wall}
    args.out.write_text(json.dumps({"runs": runs}, indent=2, sort_keys=True) + "\n")
    for m, r in rows.items():
        print(f"{m:9s} lr {r['lr']:g} alpha {r['alpha']:g}: eval AUC {r['eval_auc']:.3f}, retention "
              f"{r.get('retention', float('nan')):.2f}, train {r['train_s']:.0f} s, {r['artifact_bytes'] / 1e6:.2f} MB")
    print(f"wrote {args.out} ({len(ran)} stages in {wall:.0f} s)")


if __name__ == "__main__":
    main()
