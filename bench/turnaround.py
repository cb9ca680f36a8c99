"""What an experiment costs besides training: every stage timed alone, before and after a change, side by side.

Clones this repository at --before (optional) and at HEAD, checks each clone's pipeline outputs out of this
checkout's DVC cache (so run `make repro` at both commits first), then forces each stage alone with
`dvc repro --force --single-item` (DVC's own start-up included), alternating: "before" and "after" run cold
(each stage its own process, as plain `dvc repro`), "warm" runs HEAD's stages through a pairtune.warm server
(as `make repro` / `make exp`). --runs rounds, medians. The training stages' own seconds (train_s, search_s in
their metrics) are subtracted: what is left is process start, imports, model loading and saving. Also times
the fixed costs on their own (importing what a stage imports, loading a model), `pairtune score` on an export
folder and, with --exp, one real `dvc exp run -S train.lora.r=N` per side (a new N each: no run-cache hit).
Writes bench/turnaround.json, one section per machine kind (`--isa avx2`: as on a CPU without AVX-512).
Run: python bench/turnaround.py --before REV [--runs 2] [--isa avx2] [--exp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _ISA, ISA_ENV, ROOT, _env, _kind, machine_info  # noqa: E402 (bench/ is not a package)

# (stage, the metrics file and key holding its training seconds, if it trains)
STAGES = (
    ("generate", None), ("prepare", None), ("base", None),
    ("tune@full", ("metrics/tune/full.json", "full", "search_s")),
    ("tune@lora", ("metrics/tune/lora.json", "lora", "search_s")),
    ("train@full", ("metrics/train/full.json", "full", "train_s")),
    ("train@lora", ("metrics/train/lora.json", "lora", "train_s")),
    ("evaluate@full", None), ("evaluate@lora", None),  # the base's evaluation is in the base stage (#36)
    ("interpolate@full", None), ("interpolate@lora", None),
    ("export@full", None), ("export@lora", None),
    # seeds.n 1 (the default) trains nothing: what they cost is their start-up
    ("seeds@full", None), ("seeds@lora", None), ("report", None),
)
# What `dvc exp run -S train.lora.r=16` reruns: every stage downstream of a LoRA param.
LORA_EXPERIMENT = ("tune@lora", "train@lora", "evaluate@lora", "interpolate@lora", "export@lora", "seeds@lora",
                   "report")
# ... of which the stages that do not train (issue #35's "besides training": <= 40 s cold, <= 25 s warm)
BESIDES_TRAINING = LORA_EXPERIMENT[2:]

# Fixed costs measured alone, in a fresh process each (python -c); {clone} is the clone's folder.
FIXED = {
    "python + import pairtune.params (generate, prepare, report's loader)": "import pairtune.params",
    "import what the report stage imports": "import pairtune.report, matplotlib.pyplot, jinja2",
    "import torch": "import torch",
    "import sentence_transformers (every stage that embeds or trains)": "import sentence_transformers",
    "load models/lora through the guard (imports included)":
        "from pairtune import models; models.load_model('{clone}/models/lora', 'cpu')",
}


def _clone(tmp: Path, label: str, rev: str) -> Path:
    """A clone of this repository at `rev` with its pipeline outputs checked out of this checkout's cache."""
    dst = tmp / label
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=dst, check=True)
    subprocess.run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], cwd=dst, env=_env(dst),
                   check=True, capture_output=True)
    subprocess.run(["dvc", "checkout", "-q"], cwd=dst, env=_env(dst), check=True, capture_output=True)
    status = subprocess.run(["dvc", "status", "-q"], cwd=dst, env=_env(dst), capture_output=True, text=True)
    if status.returncode:
        raise SystemExit(f"{rev}: its pipeline is not in {ROOT}/.dvc/cache (run `make repro` at that commit):\n"
                         + subprocess.run(["dvc", "status"], cwd=dst, env=_env(dst), capture_output=True,
                                          text=True).stdout[-2000:])
    return dst


def _server(clone: Path, tmp: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """A pairtune.warm server for `clone` (its environment: the clone's src first), and the variable naming it."""
    path = tmp / "warm.socket"
    proc = subprocess.Popen([sys.executable, "-m", "pairtune.warm", "--serve", str(path), "--log",
                             str(tmp / "warm.jsonl")], cwd=clone, env=_env(clone), start_new_session=True)
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit("the pairtune.warm server did not start")
        time.sleep(0.1)
    return proc, {"PAIRTUNE_WARM": f"{proc.pid}:{path}"}


def _stage(clone: Path, stage: str, training: tuple[str, str, str] | None,
           extra: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds of `dvc repro -f -s stage` in `clone`, and those seconds less the stage's own training.
    A stage the clone's revision does not have (seeds@ before it existed) costs 0."""
    if f"\n  {stage.split('@')[0]}:" not in (clone / "dvc.yaml").read_text():
        return {"wall_s": 0.0, "training_s": 0.0, "other_s": 0.0}
    start = time.perf_counter()
    proc = subprocess.run(["dvc", "repro", "--force", "--single-item", "-q", stage], cwd=clone,
                          env={**_env(clone), **(extra or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{clone.name}: dvc repro -f -s {stage} failed:\n{proc.stderr[-3000:]}")
    trained = 0.0
    if training:
        path, key, field = training
        trained = float(json.loads((clone / path).read_text())[key][field])
    return {"wall_s": wall, "training_s": trained, "other_s": wall - trained}


def _experiment(clone: Path, r: int, warm: bool) -> dict[str, float]:
    """One `dvc exp run -S train.lora.r=<r>` (warm: through `python -m pairtune.warm`, server start included),
    then the workspace put back. Training = the tune search plus the training, from the run's own metrics."""
    cmd = ["dvc", "exp", "run", "-S", f"train.lora.r={r}"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pairtune.warm", *cmd] if warm else cmd, cwd=clone,
                          env=_env(clone), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{clone.name}: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    trained = sum(float(json.loads((clone / path).read_text())["lora"][key])
                  for path, key in (("metrics/tune/lora.json", "search_s"), ("metrics/train/lora.json", "train_s")))
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=clone, check=True)
    subprocess.run(["dvc", "checkout", "-q", "--force"], cwd=clone, env=_env(clone), check=True, capture_output=True)
    return {"wall_s": wall, "training_s": trained, "other_s": wall - trained, "r": r}


def _fixed(clone: Path, code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code.format(clone=clone)], cwd=clone, env=_env(clone), check=True,
                   capture_output=True)
    return time.perf_counter() - start


def _score(clone: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pairtune.cli", "score", "models/export/lora", "I love hiking",
                    "Weekends are for the mountains"], cwd=clone, env=_env(clone), check=True, capture_output=True)
    return time.perf_counter() - start


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def summarise(stages: dict[str, dict[str, float]]) -> dict[str, float]:
    """The issue's targets from per-stage medians: a LoRA experiment's and a clean repro's non-training seconds
    (training stages count their start-up, imports and saving, not their training or lr search)."""
    other = {s: v["other_s"] for s, v in stages.items()}
    out = {}
    if all(s in other for s in BESIDES_TRAINING):
        out["lora_experiment_besides_training_s"] = sum(other[s] for s in BESIDES_TRAINING)
    if all(s in other for s in LORA_EXPERIMENT):  # a total only where every stage of it was timed (--stages)
        out.update(lora_experiment_other_s=sum(other[s] for s in LORA_EXPERIMENT),
                   lora_experiment_training_s=sum(stages[s]["training_s"] for s in LORA_EXPERIMENT))
    if all(s in other for s, _ in STAGES):
        out.update(clean_repro_other_s=sum(other.values()),
                   clean_repro_training_s=sum(v["training_s"] for v in stages.values()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="commit to compare with (its outputs must be in this checkout's cache)")
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--runs", type=int, default=2, help="rounds of every non-training stage (medians)")
    ap.add_argument("--train-runs", type=int, default=1, help="rounds of the tune and train stages (they retrain)")
    ap.add_argument("--stages", default=",".join(s for s, _ in STAGES), help="comma-separated subset")
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                    help="run as on a CPU without native bf16: cap oneDNN, ATen and MKL at AVX2")
    ap.add_argument("--exp", action="store_true", help="also one real `dvc exp run` per side (minutes each)")
    ap.add_argument("--no-warm", action="store_true", help="do not time HEAD's stages through pairtune.warm")
    ap.add_argument("--out", default=str(ROOT / "bench" / "turnaround.json"))
    args = ap.parse_args()
    _ISA.update(ISA_ENV.get(args.isa, {}))
    mach = machine_info()
    print(f"machine: {mach['machine']}" + (f" (restricted: {args.isa})" if args.isa else ""), flush=True)
    wanted = [(s, t) for s, t in STAGES if s in args.stages.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        clones = {"after": _clone(Path(tmp), "after", args.after)}
        if args.before:
            clones = {"before": _clone(Path(tmp), "before", args.before), **clones}
        sides = dict(clones)
        envs: dict[str, dict[str, str]] = {side: {} for side in clones}
        server = None
        if not args.no_warm:
            server, envs["warm"] = _server(clones["after"], Path(tmp))
            sides["warm"] = clones["after"]
        raw: dict[str, dict[str, list[dict[str, float]]]] = {side: {s: [] for s, _ in wanted} for side in sides}
        fixed: dict[str, dict[str, list[float]]] = {side: {k: [] for k in (*FIXED, "pairtune score")} for side in clones}
        try:
            for r in range(args.runs):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for stage, training in wanted:
                    if training and r >= args.train_runs:
                        continue
                    for side in order:
                        raw[side][stage].append(_stage(sides[side], stage, training, envs[side]))
                        print(f"run {r + 1}/{args.runs} {stage:17s} {side:6s} "
                              f"{raw[side][stage][-1]['wall_s']:6.1f} s wall, "
                              f"{raw[side][stage][-1]['other_s']:6.1f} s besides training", flush=True)
                for side in [s for s in order if s in clones]:
                    for name, code in FIXED.items():
                        fixed[side][name].append(_fixed(clones[side], code))
                    fixed[side]["pairtune score"].append(_score(clones[side]))
            experiments = {}
            if args.exp:
                first = 16 + (10 if args.isa else 0)  # a new r each (and per --isa): the run-cache has none of them
                for i, side in enumerate(sides):
                    experiments[side] = _experiment(sides[side], first + i, warm=side == "warm")
                    print(f"dvc exp run -S train.lora.r={first + i} {side:6s} {experiments[side]['wall_s']:6.1f} s "
                          f"wall, {experiments[side]['other_s']:6.1f} s besides training", flush=True)
        finally:
            if server is not None:
                server.terminate()
                server.wait()
        revs = {side: subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True,
                                     text=True, check=True).stdout.strip() for side, path in sides.items()}
    results: dict[str, object] = {"date": date.today().isoformat(), "machine": mach, "runs": args.runs,
                                  "train_runs": args.train_runs}
    for side in sides:
        stages = {s: _median(rows) for s, rows in raw[side].items()}
        results[side] = {"commit": revs[side], "stages": stages, "totals": summarise(stages), "raw": raw[side],
                         "fixed_s": {k: statistics.median(v) for k, v in fixed[side].items()} if side in clones
                         else {}, **({"experiment": experiments[side]} if side in experiments else {})}
    everything = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {"machines": {}}
    everything["machines"][_kind(mach, args.isa)] = results
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")

    print(f"\n{_kind(mach, args.isa)}: {mach['machine']}")
    for stage, _ in wanted:
        print(f"{stage:17s} " + "  ".join(f"{side} {results[side]['stages'][stage]['other_s']:6.1f} s"
                                          for side in sides))
    for key in results["after"]["totals"]:
        print(f"{key:34s} " + "  ".join(f"{side} {results[side]['totals'][key]:6.1f} s" for side in sides))
    for name in fixed[next(iter(clones))]:
        print(f"{name[:60]:60s} " + "  ".join(f"{side} {results[side]['fixed_s'][name]:5.2f} s" for side in clones))
    for side in experiments:
        e = experiments[side]
        print(f"dvc exp run -S train.lora.r={e['r']} {side:6s}: {e['wall_s']:.1f} s, {e['other_s']:.1f} s besides training")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
