"""Evaluate one model's embeddings on the eval split, with thresholds from dev.

`evaluate` takes embeddings (not a model) so it can be tested without one; the stage encodes each unique
text of dev and eval once and passes the result in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from pairtune import io
from pairtune import metrics as M
from pairtune.params import Evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    metrics: dict[str, float]  # flat, numeric, finite: every figure (details.json; the headline is a subset)
    details: dict[str, Any]  # tables and texts for the report
    roc: list[dict[str, float]]  # dvc plots data
    scores: list[dict[str, Any]]
    histogram: list[dict[str, float]]  # cosine distribution per class, 40 bins over [-1, 1]
    predictions: list[dict[str, int]]


# What `dvc exp show` / `dvc metrics diff` compare across experiments: the eight metrics (per-category
# breakdown: see details), the AUC interval, under short names (rho: Spearman's rho; the table has to fit a
# terminal: docs/dvc.md, "Compare experiments"). Everything else goes to details.json.
HEADLINE = {"rho": "spearman", "margin": "margin", "cohens_d": "cohens_d", "auc": "auc",
            "auc_low": "auc_ci_low", "auc_high": "auc_ci_high", "f1": "f1", "purity": "cluster_purity",
            "fp": "fp_count"}


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The few numbers a person compares across experiments, from the full flat metrics."""
    return {short: metrics[key] for short, key in HEADLINE.items() if key in metrics}


def unique_texts(*splits: list[dict[str, Any]]) -> list[str]:
    """Every distinct text in the splits, sorted: each is encoded once."""
    return sorted({t for pairs in splits for p in pairs for t in (p["text_1"], p["text_2"])})


EMBEDDINGS = "embeddings.npy"  # a stage's encode of unique_texts(dev, eval), float32: later stages reuse it
EMBEDDINGS_KEY = "embeddings.json"  # what it was computed from (embeddings_key): reused only on an exact match


def embeddings_key(texts: list[str], model_identity: bytes, device: str, batch_size: int) -> str:
    """What decides an encode's bytes: the texts in order, the model, the device and the batch size (the
    batches' padding). Export reuses evaluate's embeddings only where this matches exactly, so a reuse gives
    byte for byte what encoding again would (tests/test_export.py checks it)."""
    h = hashlib.sha256(json.dumps([texts, device, batch_size], ensure_ascii=False).encode())
    h.update(model_identity)
    return h.hexdigest()


def save_embeddings(folder: Path, emb: np.ndarray, key: str, device: str) -> None:
    """Store an encode of unique_texts(dev, eval) in `folder` with the key it was computed from (evaluate's
    of each model, interpolate's of its chosen model): interpolate and export reuse it instead of encoding."""
    np.save(folder / EMBEDDINGS, emb)
    io.write_json(folder / EMBEDDINGS_KEY, {"key": key, "texts": len(emb), "device": device})


def stored_embeddings(folder: Path, key: str) -> np.ndarray | None:
    """The encode `save_embeddings` left in `folder` if it was computed from exactly `key` (the texts in order,
    the model, the device, the batch size), else None: a reuse then gives byte for byte what encoding again
    would, since `models.embed` embeds each text independently of the others."""
    try:
        stored = json.loads((folder / EMBEDDINGS_KEY).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError):
        return None
    if stored != key:
        log.info("%s: computed from other texts, model, device or batch size: encoding again", folder / EMBEDDINGS)
        return None
    emb = np.load(folder / EMBEDDINGS)
    log.info("reusing %s (%d texts)", folder / EMBEDDINGS, len(emb))
    return emb


def _finite(d: dict[str, float]) -> dict[str, float]:
    # dvc metrics and JSON need finite numbers; an undefined value (one class, zero spread) is left out.
    return {k: round(float(v), 6) for k, v in d.items() if not math.isnan(v) and not math.isinf(v)}


def _histogram(s: np.ndarray, y: np.ndarray, bins: int = 40) -> list[dict[str, float]]:
    edges = np.linspace(-1.0, 1.0, bins + 1)
    s = np.clip(s, -1.0, 1.0)  # float rounding can put identical texts at 1.0000001, outside the last bin
    pos, _ = np.histogram(s[y == 1], edges)
    neg, _ = np.histogram(s[y == 0], edges)
    return [{"cosine": round(float((a + b) / 2), 4), "positives": int(p), "negatives": int(n)}
            for a, b, p, n in zip(edges[:-1], edges[1:], pos, neg, strict=True)]


def evaluate(emb: np.ndarray, index: dict[str, int], dev: list[dict[str, Any]], eval_: list[dict[str, Any]],
             cfg: Evaluate, positive_threshold: float, seed: int) -> Result:
    """All eight metrics on eval; the F1 and false-positive thresholds come from dev."""
    s_dev = M.pair_scores(emb, index, dev)
    y_dev = np.array([p["label"] >= positive_threshold for p in dev], dtype=int)
    s = M.pair_scores(emb, index, eval_)
    graded = np.array([p["label"] for p in eval_], dtype=float)
    y = (graded >= positive_threshold).astype(int)

    out: dict[str, float] = {"n_pairs": len(eval_), "n_positives": int(y.sum())}
    # 1. rank correlation (with binary labels Spearman is a rescaled AUC and cannot reach 1)
    out["spearman"], out["pearson"] = M.spearman(s, graded), M.pearson(s, graded)
    # 2-4. separation
    out.update(M.margin(s, y))
    out["cohens_d"] = M.cohens_d(s, y)
    out["welch_t"], out["welch_p"] = M.welch(s, y)
    out["auc"] = M.auc(s, y)
    # 5. F1 at the dev-chosen threshold, and the optimistic eval oracle
    threshold = M.best_f1_threshold(s_dev, y_dev)
    out["threshold"] = threshold
    out.update(M.classify(s, y, threshold))
    oracle = M.best_f1_threshold(s, y)
    out["f1_oracle"], out["threshold_oracle"] = M.classify(s, y, oracle)["f1"], oracle
    # confidence intervals: resample eval pairs, threshold fixed from dev
    stats = {"spearman": lambda i: M.spearman_rows(s[i], graded[i]), "auc": lambda i: M.auc_rows(s[i], y[i]),
             "margin": lambda i: M.margin_rows(s[i], y[i]), "f1": lambda i: M.f1_rows(s[i], y[i], threshold)}
    for name, fn in stats.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = M.bootstrap_ci(fn, len(s), cfg.bootstrap, cfg.confidence, seed)
    # 6. cluster purity
    coords = labels = clustered = None
    if cfg.cluster:
        # UMAP's cost grows faster than the pairs: a seeded sample of at most cluster_sample pairs (recorded)
        clustered = M.sample_indices(len(eval_), cfg.cluster_sample, seed)
        cl, coords, labels = M.cluster_purity(M.pair_points(emb, index, [eval_[i] for i in clustered]),
                                              y[clustered],
                                              cfg.umap_neighbors, cfg.umap_min_dist, cfg.hdbscan_min_cluster,
                                              cfg.hdbscan_min_samples, seed, cfg.cluster_seeds)
        out.update(cl, cluster_points=len(clustered))
    # 7. false positives at the dev F1 threshold, and at the common operating point (recall on dev)
    fp = M.false_positives(s, y, eval_, threshold, cfg.worst_errors)
    common = M.recall_threshold(s_dev, y_dev, cfg.recall_target)
    fp_common = M.false_positives(s, y, eval_, common, cfg.worst_errors)
    out.update(fp_count=fp["count"], fp_rate=fp["count"] / max(fp["negatives"], 1), threshold_common=common,
               fp_common_count=fp_common["count"], recall_common=M.classify(s, y, common)["recall"])
    for name, n in fp_common["by_pair_type"].items():
        out[f"fp_common_{name}"] = n
    # 8. breakdowns
    by_cat = M.breakdown(s, y, [p["category"] for p in eval_], threshold)
    by_type = M.breakdown(s, y, [p["pair_type"] for p in eval_], threshold)
    for prefix, table in (("category", by_cat), ("pair_type", by_type)):
        for group, row in table.items():
            out[f"{prefix}_{group}_accuracy"] = row["accuracy"]
            if "auc" in row:
                out[f"{prefix}_{group}_auc"] = row["auc"]

    fpr, tpr, _ = roc_curve(y, s)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
    metrics = _finite(out)
    details = {"metrics": metrics, "fp": fp, "errors": M.errors(s, y, eval_, threshold, cfg.worst_errors),
               "fp_common": fp_common, "by_category": by_cat, "by_pair_type": by_type,
               "umap": None if coords is None else [[round(float(a), 4), round(float(b), 4)] for a, b in coords],
               "cluster_labels": None if labels is None else labels.tolist(),
               # which eval pairs the UMAP points are (None: all of them, in order)
               "cluster_index": None if clustered is None or len(clustered) == len(eval_) else clustered.tolist(),
               "scores": [round(float(v), 6) for v in s], "labels": y.tolist(), "graded": graded.tolist()}
    return Result(
        metrics=metrics, details=details,
        roc=[{"fpr": round(float(fpr[i]), 6), "tpr": round(float(tpr[i]), 6)} for i in keep],
        scores=[{"pair": i, "cosine": round(float(v), 6), "label": int(y[i]), "pair_type": eval_[i]["pair_type"]}
                for i, v in enumerate(s)],
        histogram=_histogram(s, y),
        predictions=[{"actual": int(a), "predicted": int(b >= threshold)} for a, b in zip(y, s, strict=True)],
    )
