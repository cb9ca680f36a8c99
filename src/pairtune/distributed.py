"""Data-parallel training through torchrun: the launcher, and what a worker needs to know about itself.

`train.processes > 1` makes the train stage start that many copies of itself with `torch.distributed.run`
on this machine (gloo on CPU, NCCL with one process per GPU on CUDA). Each copy is an ordinary
sentence-transformers / transformers Trainer run that finds torchrun's environment and joins the group; the
trainer splits each global batch between workers and all-reduces the gradients. Only rank 0 writes outputs.
A stage started by torchrun yourself (e.g. several machines) is already a worker and launches nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pairtune.errors import WORKER_ERRORS_ENV, PairtuneError

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, number of workers) from torchrun's environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def in_worker() -> bool:
    """True inside a process torchrun started (ours or the user's multi-node launch)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_device(device: str) -> str:
    """A worker's own device: CUDA workers take one GPU each (cuda:LOCAL_RANK); CPU stays cpu."""
    if device.startswith("cuda") and in_worker():
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def check_batch(batch_size: int, workers: int) -> int:
    """The per-worker batch: the global batch (`train.batch_size`) split evenly, or a one-line error."""
    if batch_size % workers:
        raise PairtuneError(f"params.yaml: train.batch_size: {batch_size} does not split evenly over "
                            f"train.processes {workers} workers")
    return batch_size // workers


def launch(script: str, argv: list[str], processes: int, device: str) -> None:
    """Run `script argv` as `processes` workers on this machine; raise the first failing worker's error.

    CPU workers share the cores: each gets cores // processes threads (torchrun's default would be 1).
    """
    with tempfile.TemporaryDirectory(prefix="pairtune-ddp-") as errors:
        env = dict(os.environ, **{WORKER_ERRORS_ENV: errors})  # a failing worker writes its error there
        if not device.startswith("cuda"):
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               script, *argv]
        log.info("launching %d DDP workers (%s): %s", processes, "nccl" if device.startswith("cuda") else "gloo",
                 " ".join(cmd[1:5]))
        code = subprocess.run(cmd, env=env, check=False).returncode
        if code:
            # The first worker to fail is the cause; the others then fail on the broken connection ("Connection
            # closed by peer") and report later.
            reports = sorted(Path(errors).glob("rank*.txt"), key=lambda f: f.stat().st_mtime_ns)
            first = f"{reports[0].stem}: {reports[0].read_text(encoding='utf-8')}" if reports else f"exit code {code}"
            raise PairtuneError(f"train: a DDP worker failed ({processes} workers), {first}")
