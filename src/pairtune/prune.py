"""Remove what DVC leaves behind of a stage that is no longer in the pipeline.

A method taken out of `train.methods` (or any stage removed from dvc.yaml) keeps its outputs in the workspace,
its entry in dvc.lock and its lines in the .gitignore files DVC wrote: DVC ignores them, but the report
depends on the per-stage folders (plots/evaluate, metrics/train, ...), so a leftover method's files would still
count there, and a teammate's clone without them would see the report as changed. This deletes, for every
stage in dvc.lock that `dvc stage list` no longer names, the outputs dvc.lock records for it, its lock entry,
and the .gitignore lines for those outputs. Paths come from dvc.lock only: nothing here knows the layout.

Run: python -m pairtune.prune [--dry-run]   (or `make prune`)
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pairtune.io import write_text


def stale(lock: dict[str, Any], current: set[str]) -> dict[str, list[str]]:
    """Stage name -> the output paths dvc.lock records, for every locked stage not in `current`."""
    return {name: [o["path"] for o in entry.get("outs", [])]
            for name, entry in lock.get("stages", {}).items() if name not in current}


def _unignore(out: Path) -> bool:
    """Drop the `/name` line DVC wrote for `out` from its folder's .gitignore (the file too, once empty)."""
    ignore = out.parent / ".gitignore"
    if not ignore.is_file():
        return False
    lines = ignore.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() != f"/{out.name}"]
    if kept == lines:
        return False
    if kept:
        ignore.write_text("\n".join(kept) + "\n", encoding="utf-8")
    else:
        ignore.unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="say what would go, change nothing")
    args = ap.parse_args(argv)
    from ruamel.yaml import YAML

    lock_path = Path("dvc.lock")
    if not lock_path.is_file():
        print("dvc.lock: not found (run from the repository root, after a dvc repro)", file=sys.stderr)
        return 1
    yaml = YAML()  # round trip: the rest of dvc.lock stays as DVC wrote it
    lock = yaml.load(lock_path.read_text(encoding="utf-8"))
    names = subprocess.run(["dvc", "stage", "list", "--name-only"], capture_output=True, text=True, check=True)
    gone = stale(lock, set(names.stdout.split()))
    if not gone:
        print("nothing to prune: every stage in dvc.lock is in the pipeline")
        return 0
    for name, outs in sorted(gone.items()):
        print(f"{'would remove' if args.dry_run else 'removing'} {name}: {', '.join(outs) or 'no outputs'}")
        if args.dry_run:
            continue
        for out in map(Path, outs):
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink(missing_ok=True)
            _unignore(out)
        del lock["stages"][name]
    if not args.dry_run:
        text = io.StringIO()
        yaml.dump(lock, text)
        write_text(lock_path, text.getvalue())  # temp file, then rename: never a half-written dvc.lock
    return 0


if __name__ == "__main__":
    sys.exit(main())
