"""pairtune: fine-tune a sentence-embedding model on labelled text pairs, and prove whether it got better."""

from __future__ import annotations

__version__ = "0.1.0"
