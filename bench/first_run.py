"""The first run on a fresh machine, timed: `git clone`, `make install` (the venv and the locked stack), `make repro`.

Clones this repository at --rev (default HEAD) into a temporary folder and runs the README's `make repro` there in
two timed steps, `make install` then `make repro` (every stage computed: the clone's DVC cache starts empty),
each under /usr/bin/time -v, with --isa avx2's caps for a CPU without native bf16. pip installs from this
machine's download cache when it has the wheels (said in the record: a machine that must download them pays its
network on top). Records the wall seconds of each step, the largest process's peak RSS, the seconds the
training stages trained and searched (their own metrics), and whether every model, adapter and metric the
clone produced has the hashes of this checkout's dvc.lock (the same results, byte for byte).
Writes bench/first_run.json, one section per machine kind; docs/performance.md's `first-run` table and the
README's figure are generated from it.
Each stage's wall seconds (DVC's bookkeeping of it included) and the learning rate and alpha each method chose
are recorded too. `--isa native avx2 --runs 2` alternates the kinds run by run and records medians.
Run: python bench/first_run.py [--isa native|avx2 ...] [--runs N] [--rev REV]
     (8 min 38 s native, 10 min 53 s AVX2-capped a run on a shared 2-core AMD EPYC, flags avx2 avx512f
     avx512_bf16, 2026-12-07)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _ISA, ISA_ENV, ROOT, _kind, machine_info  # noqa: E402 (bench/ is not a package)

TRAINING = (("tune", "search_s"), ("train", "train_s"))


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float, dict[str, float]]:
    """Wall seconds and the largest process's peak RSS (MB) of `cmd` under /usr/bin/time -v, and each DVC
    stage's wall seconds: from DVC's "Running stage 'x'" line to the next stage's (or the end), so DVC's own
    hashing and caching of that stage's outputs count to it (none for a command that runs no stage)."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with log.open("a") as fh:
        # Unbuffered, so each "Running stage" line arrives when DVC prints it (a pipe is block-buffered).
        proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # type: ignore[union-attr]
            fh.write(line)
            # search, not match: a stage's last output line may lack its newline and run into DVC's
            if m := re.search(r"Running stage '([^']+)'", line):
                marks.append((m.group(1), time.perf_counter()))
        proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}; the end of {log}:\n{log.read_text()[-3000:]}")
    rss = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text())
    ends = [t for _, t in marks[1:]] + [start + wall]
    stages = {name: round(end - t, 1) for (name, t), end in zip(marks, ends)}
    return wall, int(rss[-1]) / 1024, stages


def _outs(lock: dict) -> dict[str, str]:
    """Every cached output's path and hash in a dvc.lock (wall times excluded, and the report page that quotes
    them: they differ by nature)."""
    out = {}
    for name, stage in lock["stages"].items():
        for o in stage.get("outs", []):
            # the report's Cost table quotes the training seconds; metrics/report.json holds its figures
            if not o["path"].startswith(("metrics/train/", "metrics/tune/", "dvclive/", "plots/report.html")):
                out[f"{name}: {o['path']}"] = o.get("md5", "")
    return out


def results(clone: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """What a finished run says of itself: each method's training and search seconds (their own metrics,
    `<stage>@<method>`), and the lr and alpha each method chose (a kind whose kernels round differently may
    choose another point). The methods are the run's train.methods; paths as the pipeline writes them."""
    methods = yaml.safe_load((clone / "params.yaml").read_text())["train"]["methods"]
    trained = {f"{stage}@{m}": json.loads((clone / f"metrics/{stage}/{m}.json").read_text())[m][key]
               for stage, key in TRAINING for m in methods}
    # the rate train kept (after any retry, tune.retries), not only the search's
    chosen = {m: {"lr": json.loads((clone / f"dvclive/train_{m}/train.json").read_text())["lr"],
                  "alpha": json.loads((clone / f"plots/interpolate/{m}/chosen.json").read_text())["alpha"]}
              for m in methods}
    return trained, chosen


def _one(rev: str, isa: str | None) -> dict:
    """One first run of `rev` as the CPU kind `isa` names (None: this CPU as it is)."""
    # The clone's own venv and tools only: nothing of this checkout's venv on PATH.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    env.update(ISA_ENV.get(isa or "", {}))
    with tempfile.TemporaryDirectory() as tmp:
        clone, log = Path(tmp) / "pairtune", Path(tmp) / "log.txt"
        start = time.perf_counter()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
        clone_s = time.perf_counter() - start
        install_s, install_rss, _ = _timed(["make", "install"], clone, env, log)
        repro_s, repro_rss, stages = _timed(["make", "repro"], clone, env, log)
        trained, chosen = results(clone)
        mine = _outs(yaml.safe_load((clone / "dvc.lock").read_text()))
        ref = _outs(yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=ROOT, capture_output=True,
                                                  text=True, check=True).stdout))
        differ = sorted(k for k in ref if mine.get(k) != ref[k])
        venv_gb = sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) / 1e9
        shutil.rmtree(clone / ".venv")
    return {"clone_s": round(clone_s, 1), "install_s": round(install_s, 1), "repro_s": round(repro_s, 1),
            "wall_s": round(clone_s + install_s + repro_s, 1),
            "peak_rss_mb_largest_process": round(max(install_rss, repro_rss), 1),
            "training_s": {k: round(v, 1) for k, v in trained.items()}, "stages_s": stages, "chosen": chosen,
            "venv_gb": round(venv_gb, 2), "outputs_equal_to_lock": not differ, "outputs_differing": differ}


def _median(runs: list[dict]) -> dict:
    """The runs' medians (seconds, RSS; per stage too), the rest from the median-wall run; every run kept."""
    mid = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
    med = {k: round(statistics.median(r[k] for r in runs), 1)
           for k in ("clone_s", "install_s", "repro_s", "wall_s", "peak_rss_mb_largest_process")}
    for key in ("training_s", "stages_s"):
        names = dict.fromkeys(k for r in runs for k in r[key])  # a stage one run's log missed still counts
        med[key] = {k: round(statistics.median(r[key][k] for r in runs if k in r[key]), 1) for k in names}
    return {**mid, **med, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--isa", choices=["native", *sorted(ISA_ENV)], nargs="+", default=["native"],
                    help="CPU kinds, alternated run by run: native (this CPU as it is) and/or avx2 (as a CPU "
                         "without native bf16: oneDNN, ATen and MKL capped at AVX2)")
    ap.add_argument("--runs", type=int, default=1, help="first runs per kind (medians; the kinds alternate)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "first_run.json"))
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    kinds = [None if k == "native" else k for k in args.isa]
    machines, runs = {}, {k: [] for k in kinds}
    for kind in kinds:
        _ISA.clear()
        _ISA.update(ISA_ENV.get(kind or "", {}))
        machines[kind] = machine_info()
    for i in range(args.runs):
        for kind in kinds:
            runs[kind].append(_one(rev, kind))
            print(f"run {i + 1}/{args.runs}, {kind or 'native'}: {runs[kind][-1]['wall_s']:.0f} s", flush=True)
    everything = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    everything = everything if "machines" in everything else {"machines": {}}
    for kind in kinds:
        record = {"commit": rev, "date": date.today().isoformat(), "machine": machines[kind],
                  "what": "git clone, make install (venv + locked stack; pip's download cache warm), make repro "
                          "(every stage, cold: plain dvc repro)", **_median(runs[kind])}
        everything["machines"][_kind(machines[kind], kind)] = record
        print(json.dumps({k: v for k, v in record.items() if k != "runs"}, indent=2))
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
