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
Run: python bench/first_run.py [--isa avx2] [--rev REV]  (~8-10 min each)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float]:
    """Wall seconds and the largest process's peak RSS (MB) of `cmd` under /usr/bin/time -v."""
    start = time.perf_counter()
    with log.open("a") as fh:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}; the end of {log}:\n{log.read_text()[-3000:]}")
    rss = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text())
    return wall, int(rss[-1]) / 1024


def _outs(lock: dict) -> dict[str, str]:
    """Every cached output's path and hash in a dvc.lock (wall-time metrics excluded: they differ by nature)."""
    out = {}
    for name, stage in lock["stages"].items():
        for o in stage.get("outs", []):
            if not o["path"].startswith(("metrics/train_", "metrics/tune_", "dvclive/")):
                out[f"{name}: {o['path']}"] = o.get("md5", "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                    help="run as on a CPU without native bf16: cap oneDNN, ATen and MKL at AVX2")
    ap.add_argument("--out", default=str(ROOT / "bench" / "first_run.json"))
    args = ap.parse_args()
    _ISA.update(ISA_ENV.get(args.isa, {}))
    mach = machine_info()
    # The clone's own venv and tools only: nothing of this checkout's venv on PATH.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    env.update(_ISA)
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone, log = Path(tmp) / "pairtune", Path(tmp) / "log.txt"
        start = time.perf_counter()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
        clone_s = time.perf_counter() - start
        install_s, install_rss = _timed(["make", "install"], clone, env, log)
        repro_s, repro_rss = _timed(["make", "repro"], clone, env, log)
        trained = {f"{stage}@{mode}": json.loads((clone / f"metrics/{stage}_{mode}.json").read_text())[mode][key]
                   for stage, key in TRAINING for mode in ("full", "lora")}
        mine = _outs(yaml.safe_load((clone / "dvc.lock").read_text()))
        ref = _outs(yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=ROOT, capture_output=True,
                                                  text=True, check=True).stdout))
        differ = sorted(k for k in ref if mine.get(k) != ref[k])
        venv_gb = sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) / 1e9
        shutil.rmtree(clone / ".venv")
    record = {"commit": rev, "date": date.today().isoformat(), "machine": mach,
              "what": "git clone, make install (venv + locked stack; pip's download cache warm), make repro "
                      "(every stage, cold: plain dvc repro)",
              "clone_s": round(clone_s, 1), "install_s": round(install_s, 1), "repro_s": round(repro_s, 1),
              "wall_s": round(clone_s + install_s + repro_s, 1),
              "peak_rss_mb_largest_process": round(max(install_rss, repro_rss), 1),
              "training_s": {k: round(v, 1) for k, v in trained.items()}, "venv_gb": round(venv_gb, 2),
              "outputs_equal_to_lock": not differ, "outputs_differing": differ}
    everything = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    everything = everything if "machines" in everything else {"machines": {}}
    everything["machines"][_kind(mach, args.isa)] = record
    Path(args.out).write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
