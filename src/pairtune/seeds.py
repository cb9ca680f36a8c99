"""Seed spread: each method retrained at more training seeds, at its chosen operating point (params `seeds`).

The pipeline trains each method once, at `seed`. With `seeds.n` = N > 1 the seeds stage trains N - 1 more
runs of a method at the same learning rate (the tune stage's choice), blends each with the base at the same
alpha (the interpolate stage's choice) and scores eval and the general set pair by pair. The report then
states each method's figures as means over the N seeds, with intervals that resample the seeds as well as
the pairs (`metrics.seed_spread`). Nothing here chooses anything: the operating point stays the one chosen
on dev + general at the pipeline's seed, so eval still decides nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from typing import Any

import numpy as np

from pairtune import metrics as M
from pairtune.params import Params

log = logging.getLogger(__name__)


def extra_seeds(seed: int, n: int) -> list[int]:
    """The training seeds besides the pipeline's own: n - 1 of them, each distinct from it."""
    return [seed + i for i in range(1, n)]


def scores(model: Any, pairs: list[dict[str, Any]], batch_size: int) -> np.ndarray:
    """The model's cosine for each pair, in order (each text encoded once, as evaluate encodes)."""
    from pairtune import models

    texts = sorted({t for p in pairs for t in (p["text_1"], p["text_2"])})
    emb = models.embed(model, texts, batch_size)
    return M.pair_scores(emb, {t: i for i, t in enumerate(texts)}, pairs)


def replicate(mode: str, p: Params, seed: int, lr: float, alpha: float, data: dict[str, list[dict[str, Any]]],
              binary: bool, base_dir: str, general: list[dict[str, Any]] | None,
              general_base: np.ndarray | None) -> dict[str, Any]:
    """Train `mode` at `lr` with training seed `seed` (data, splits and recipe otherwise the pipeline's), blend
    it at `alpha` and score it: eval and general scores pair by pair, eval AUC / Spearman, retention."""
    from pairtune import interpolation as I
    from pairtune import models, training

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"pairtune-seed{seed}-") as tmp:
        training.train_mode(mode, dataclasses.replace(p, seed=seed), data["train"], data["dev"], binary, base_dir,
                            tmp, None, lr)
        device = models.pick_device(p.train.device)
        interp = I.Interpolator.between(models.load_model(base_dir, device), models.load_model(tmp, device))
    interp.set(alpha)
    bs = p.evaluate.batch_size
    graded = np.array([q["label"] for q in data["eval"]], dtype=float)
    s = scores(interp.model, data["eval"], bs)
    y = (graded >= p.data.positive_threshold).astype(int)
    out: dict[str, Any] = {"seed": seed, "eval_auc": M.auc(s, y), "eval_spearman": M.spearman(s, graded),
                           "eval_scores": [float(v) for v in s]}
    if general and general_base is not None:
        g = scores(interp.model, general, bs)
        labels = np.array([q["label"] for q in general], dtype=float)
        out["retention"] = M.spearman(g, labels) / M.spearman(general_base, labels)
        out["general_scores"] = [float(v) for v in g]
    out["wall_s"] = round(time.perf_counter() - start, 2)
    log.info("%s seed %d: eval AUC %.4f, Spearman %.4f%s in %.1f s", mode, seed, out["eval_auc"],
             out["eval_spearman"], f", retention {out['retention']:.3f}" if "retention" in out else "", out["wall_s"])
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}

