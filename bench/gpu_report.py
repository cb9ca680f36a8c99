"""bench/gpu.sh's last step: the machine, the CUDA tests and the benchmark's figures in one JSON file.

Run by bench/gpu.sh; exits 1 when a CUDA test failed or the benchmark did not finish, so the script's exit
status says whether the GPU check passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def junit_summary(path: Path) -> dict:
    """Counts and the failed tests (name and the first line of the message) of a pytest JUnit XML file."""
    if not path.is_file():
        return {"error": f"{path.name}: missing (pytest did not finish)"}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            failed.append({"test": f"{case.get('classname')}::{case.get('name')}", "message": (message or [""])[0]})
    return counts | {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                     "failed": failed}


def _tail(path: Path, n: int = 40) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-n:] if path.is_file() else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smi", type=Path, required=True)
    ap.add_argument("--junit", type=Path, required=True)
    ap.add_argument("--tests-rc", type=int, required=True)
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--bench-rc", type=int, required=True)
    ap.add_argument("--wall", type=int, required=True, help="seconds the whole script took")
    ap.add_argument("--logs", type=Path, nargs="*", default=[])
    args = ap.parse_args(argv)
    tests = junit_summary(args.junit)
    bench = json.loads(args.bench.read_text()) if args.bench.is_file() else {}
    result = {"gpu": args.smi.read_text().strip() if args.smi.is_file() else "",
              "wall_s": args.wall, "cuda_tests": tests | {"exit_code": args.tests_rc},
              "bench": bench, "bench_exit_code": args.bench_rc,
              "log_tails": {p.name: _tail(p) for p in args.logs}}
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(args.out)
    ok = args.tests_rc == 0 and args.bench_rc == 0 and bool(bench)
    print(f"{args.out}: CUDA tests {tests.get('passed', 0)} passed, {len(tests.get('failed', []))} failed, "
          f"{tests.get('skipped', 0)} skipped; benchmark {'done' if ok else 'FAILED'}; {args.wall} s",
          file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
