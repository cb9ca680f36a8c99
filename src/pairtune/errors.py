"""One error type for bad input, and the stage wrapper that turns it into one line and exit code 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class PairtuneError(Exception):
    """Bad input or a failed check; its message is one line naming the file, line and problem."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main: a PairtuneError prints one line on stderr and exits 2, without a traceback."""
    try:
        main()
    except PairtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging() -> None:
    """Configure stage logging once: level, format, and quieter third-party loggers."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "numba", "matplotlib", "filelock", "onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
