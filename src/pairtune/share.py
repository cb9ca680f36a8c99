"""Share every run in the run-cache, not only the checked-out one: `python -m pairtune.share [-r REMOTE]`.

`dvc push --run-cache` (DVC 3.67) uploads the run records and the objects of the *workspace's* outputs. A run
recorded earlier (another param set, since reverted) is pushed as a record whose objects stay local: its
models if they were never checked out when pushing, and always its git-tracked metrics files (`cache:
false` outs, which no workspace push collects). A teammate's `dvc repro --pull` of that param set then finds
the record, misses an object and trains again. This pushes, for every run record in the local cache, the
objects of all its outputs that the local cache holds, so `dvc repro --pull` restores any run pushed here.
`make push` runs `dvc push --run-cache` and then this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairtune import dvccompat
from pairtune.errors import PairtuneError


def run_records(cache_dir: Path) -> list[tuple[str, str]]:
    """(key, value) of every run record under DVC's `runs/` folder: runs/<key[:2]>/<key>/<value>."""
    return sorted((p.parent.name, p.name) for p in cache_dir.glob("??/*/*") if p.is_file())


def push_run_outputs(root: Path, remote: str | None = None) -> tuple[int, int, int]:
    """Push the output objects of every local run record; return (records, objects pushed, objects not local)."""
    dvccompat.require_tested("pairtune.share (pushing every run's outputs)")
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        records = run_records(Path(repo.stage_cache.cache_dir))
        # the run-cache builds each record's stage with every out cached, the git-tracked metrics too
        used = repo.stage_cache.get_used_objs(records)
        local = repo.cache.local
        objs = {h for hashes in used.values() for h in hashes}
        present = {h for h in objs if local.exists(h.value)}
        result = repo.cloud.push(present, remote=remote)
        if result.failed:
            raise SystemExit(f"error: {len(result.failed)} run-cache objects failed to upload to the remote")
        return len(records), len(result.transferred), len(objs - present)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pairtune.share", description=__doc__.splitlines()[0])
    ap.add_argument("-r", "--remote", help="DVC remote name (default: the repository's default remote)")
    ap.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root (default: here)")
    args = ap.parse_args(argv)
    try:
        records, pushed, absent = push_run_outputs(args.repo, args.remote)
    except PairtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    note = f"; {absent} not in the local cache (garbage-collected?)" if absent else ""
    print(f"run-cache: {records} run records, {pushed} output objects uploaded{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
