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
import math
import tempfile
import time
from collections.abc import Callable
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


def spread(stat: Callable[[int, np.ndarray], np.ndarray], n_seeds: int, n: int, resamples: int, confidence: float,
           seed: int) -> tuple[float, float, float]:
    """A figure averaged over training seeds, with a percentile interval that resamples both the seeds and the
    n pairs: (mean, low, high).

    `stat(k, idx)` is the figure of seed k on each row of the (rows, n) pair-index matrix idx (the metrics
    `*_rows` functions). A replicate draws n pair indices (one draw for every seed, so paired figures stay
    paired) and n_seeds seeds with replacement, and averages the drawn seeds' figures. NaN rows are skipped."""
    whole = np.arange(n)[None]
    mean = float(np.mean([stat(k, whole)[0] for k in range(n_seeds)]))
    rng = np.random.default_rng(seed)
    chunk = max(1, M.BOOTSTRAP_CELLS // max(n, 1))
    parts = []
    for begin in range(0, resamples, chunk):
        idx = rng.integers(0, n, (min(chunk, resamples - begin), n))
        per_seed = np.stack([np.asarray(stat(k, idx), dtype=float) for k in range(n_seeds)])  # (seeds, rows)
        drawn = rng.integers(0, n_seeds, (len(idx), n_seeds))
        parts.append(per_seed[drawn, np.arange(len(idx))[:, None]].mean(axis=1))
    values = np.concatenate(parts)
    values = values[~np.isnan(values)]
    if not len(values):
        return mean, math.nan, math.nan
    half = (1 - confidence) / 2
    lo, hi = np.quantile(values, [half, 1 - half])
    return mean, float(lo), float(hi)
