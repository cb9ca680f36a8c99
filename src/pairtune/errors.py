"""One error type for bad input, and the stage wrapper that turns it into one line and exit code 2."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

WORKER_ERRORS_ENV = "PAIRTUNE_WORKER_ERRORS"  # set by pairtune.distributed.launch for its workers


class PairtuneError(Exception):
    """Bad input or a failed check; its message is one line naming the file, line and problem."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main: a PairtuneError prints one line on stderr and exits 2, without a traceback."""
    if _in_torchrun():
        # torchrun stops every worker with SIGTERM when one fails: exit normally instead, so `finally` blocks
        # (atomic_dir's) remove the half-written temporary folder.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except PairtuneError as err:
        _report_to_launcher(str(err))
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:  # a DDP worker's crash: its launcher names it (pairtune.distributed.launch)
        _report_to_launcher(f"{type(err).__name__}: {err}")
        raise


def _in_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _report_to_launcher(message: str) -> None:
    """In a DDP worker started by pairtune.distributed.launch: leave the first line of the error where the
    launcher reads it, so the stage fails with the cause rather than torchrun's summary."""
    folder = os.environ.get(WORKER_ERRORS_ENV)
    if folder and _in_torchrun():
        line = message.splitlines()[0] if message else ""
        Path(folder, f"rank{os.environ.get('RANK', '0')}.txt").write_text(line, encoding="utf-8")


def setup_logging() -> None:
    """Configure stage logging once: level, format, and quieter third-party loggers."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "numba", "matplotlib", "filelock", "onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
