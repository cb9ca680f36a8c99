"""Put this checkout's src/ first on sys.path, so a stage runs the code of the checkout it runs in.

`make install` installs pairtune editable: every `import pairtune` would resolve to the workspace's src/.
`dvc exp run --queue` (and `--temp`) runs each experiment in a copy of the repository under .dvc/tmp/exps/
and hashes that copy's src/pairtune/*.py as the stage's deps: without this, an edit to the workspace's src/
during a sweep would run in experiments that record the code they were queued with. Every stage script
imports this module first (a script's own folder, stages/, is sys.path[0]); DDP workers run the same script.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
if "pairtune" in sys.modules and not str(Path(sys.modules["pairtune"].__file__ or "").resolve()).startswith(SRC):
    raise ImportError(f"pairtune was imported from {sys.modules['pairtune'].__file__} before {SRC} could come first")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)

# `python -m pairtune.warm dvc repro` (make repro, make exp): hand this stage to the warm server, which runs it
# in a fork that has torch and sentence-transformers imported already; back here only if it cannot.
if os.environ.get("PAIRTUNE_WARM") and not os.environ.get("PAIRTUNE_WARM_CHILD"):
    from pairtune import warm

    warm.delegate()
