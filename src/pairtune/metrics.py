"""The eight evaluation metrics, computed the same way for every model.

Conventions: `scores` are cosine similarities of pairs, `y` the binary labels (scaled label >= the positive
threshold), `graded` the scaled labels in [0, 1]. Thresholds are always chosen on dev and applied to eval;
the only number picked on eval is the F1 *oracle*, labelled as such.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

# scipy.stats and sklearn.metrics are imported where used: together ~1.5 s of a stage's start-up (scikit-learn
# pulls pandas), and the report stage, which needs neither, starts in well under that without them.


def pair_scores(emb: np.ndarray, index: dict[str, int], pairs: list[dict[str, Any]]) -> np.ndarray:
    """Cosine of each pair from L2-normalised embeddings of its unique texts."""
    a = emb[[index[p["text_1"]] for p in pairs]]
    b = emb[[index[p["text_2"]] for p in pairs]]
    return np.sum(a * b, axis=1).astype(np.float64)


def both_classes(y: np.ndarray) -> bool:
    return 0 < int(np.sum(y)) < len(y)


def spearman(scores: np.ndarray, graded: np.ndarray) -> float:
    """Spearman's rho; NaN where either side is constant."""
    if np.ptp(scores) == 0 or np.ptp(graded) == 0:
        return math.nan
    from scipy import stats

    return float(stats.spearmanr(scores, graded).statistic)


def pearson(scores: np.ndarray, graded: np.ndarray) -> float:
    if np.ptp(scores) == 0 or np.ptp(graded) == 0:
        return math.nan
    from scipy import stats

    return float(stats.pearsonr(scores, graded).statistic)


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """AUC-ROC; NaN with one class."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if both_classes(y) else math.nan


def margin(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean cosine of positives, of negatives, and their difference."""
    pos = float(np.mean(scores[y == 1])) if np.any(y == 1) else math.nan
    neg = float(np.mean(scores[y == 0])) if np.any(y == 0) else math.nan
    return {"mean_cos_pos": pos, "mean_cos_neg": neg, "margin": pos - neg}


def cohens_d(scores: np.ndarray, y: np.ndarray) -> float:
    """Cohen's d with the pooled standard deviation (ddof 1); NaN if undefined (a class < 2, zero spread)."""
    a, b = scores[y == 1], scores[y == 0]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / (len(a) + len(b) - 2))
    if pooled == 0:
        return math.nan
    return float((np.mean(a) - np.mean(b)) / pooled)


def welch(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Welch's t statistic and two-sided p value (positives minus negatives)."""
    a, b = scores[y == 1], scores[y == 0]
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan, math.nan
    from scipy import stats

    res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def best_f1_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The threshold (predict positive when score >= it) with the highest F1, searched over all of [-1, 1].

    Every distinct score is a candidate cut; the threshold returned sits midway in the gap below the best
    cut, so a score equal to a dev score is classified as on dev.
    """
    cuts = np.unique(scores)[::-1]  # descending
    # F1 at every cut at once from sorted counts (O(n log n); a classify() per cut was O(n^2): 4 s at 30,000
    # dev pairs). 2tp / (2tp + fp + fn) = 2tp / (predicted + actual positives), the same integers as classify.
    predicted = len(scores) - np.searchsorted(np.sort(scores), cuts, side="left")
    tp = np.sum(y == 1) - np.searchsorted(np.sort(scores[y == 1]), cuts, side="left")
    denom = predicted + np.sum(y == 1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(len(cuts)), where=denom > 0)
    best_i = int(np.argmax(f1))  # the first (highest) cut among equal F1s
    lower = cuts[best_i + 1] if best_i + 1 < len(cuts) else -1.0
    return float((cuts[best_i] + lower) / 2)


def recall_threshold(scores: np.ndarray, y: np.ndarray, target: float) -> float:
    """The highest threshold whose recall on these pairs is at least `target`."""
    pos = np.sort(scores[y == 1])[::-1]
    k = max(1, math.ceil(target * len(pos)))
    return float(pos[k - 1])


def classify(scores: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """F1, precision, recall and accuracy at a fixed threshold (an empty ratio is 0, as sklearn's
    zero_division=0). From the confusion counts: sklearn's four validated calls took 12 ms, and the F1
    bootstrap and the threshold search call this hundreds of times; tests compare with sklearn."""
    pred = scores >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp, fn = int(np.sum(pred)) - tp, int(np.sum(pos)) - tp
    tn = len(y) - tp - fp - fn

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    return {"f1": ratio(2 * tp, 2 * tp + fp + fn), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "accuracy": ratio(tp + tn, len(y))}


# Index cells per bootstrap chunk: the (resamples, n) index matrix and its ranks are built this many at a
# time, so memory stays ~50 MB whatever the pair count (40,000 eval pairs x 1000 resamples is 40M cells).
BOOTSTRAP_CELLS = 1 << 21


def bootstrap_ci(stat: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, confidence: float,
                 seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval over `resamples` resamples of n items (seeded).

    `stat` takes a (k, n) matrix of resampled indices, one resample per row, and returns its k values (the
    `*_rows` functions below); a NaN (undefined: one class drawn) is skipped. Rows are drawn in chunks from
    one generator, the same stream as drawing them one at a time.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CELLS // max(n, 1))
    parts = [np.asarray(stat(rng.integers(0, n, (min(chunk, resamples - start), n))), dtype=float)
             for start in range(0, resamples, chunk)]
    return _percentiles(np.concatenate(parts) if parts else np.empty(0), confidence)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap values, NaNs (undefined resamples) skipped."""
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def seed_spread(stat: Callable[[int, np.ndarray], np.ndarray], n_seeds: int, n: int, resamples: int,
                confidence: float, seed: int) -> tuple[float, float, float]:
    """A figure averaged over training seeds, with a percentile interval that resamples both the seeds and the
    n pairs: (mean, low, high).

    `stat(k, idx)` is the figure of seed k on each row of the (rows, n) pair-index matrix idx (the metrics
    `*_rows` functions). A replicate draws n pair indices (one draw for every seed, so paired figures stay
    paired) and n_seeds seeds with replacement, and averages the drawn seeds' figures. NaN rows are skipped."""
    whole = np.arange(n)[None]
    mean = float(np.mean([stat(k, whole)[0] for k in range(n_seeds)]))
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CELLS // max(n, 1))
    parts = []
    for begin in range(0, resamples, chunk):
        idx = rng.integers(0, n, (min(chunk, resamples - begin), n))
        per_seed = np.stack([np.asarray(stat(k, idx), dtype=float) for k in range(n_seeds)])  # (seeds, rows)
        drawn = rng.integers(0, n_seeds, (len(idx), n_seeds))
        parts.append(per_seed[drawn, np.arange(len(idx))[:, None]].mean(axis=1))
    return (mean, *_percentiles(np.concatenate(parts), confidence))


# Row-wise statistics for the bootstrap: each row of the 2-d arguments is one resample. One validated
# roc_auc_score call took 2.6 ms, so the report's 6,000 resampled AUCs were 14 s of its 15; these take
# milliseconds for all rows and are tested equal to sklearn's and scipy's per-row results.


def auc_rows(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUC-ROC of each row, NaN for a row with one class: the Mann-Whitney form with mid-ranks for ties,
    which is the area roc_auc_score computes."""
    from scipy.stats import rankdata

    r = rankdata(scores, axis=1)
    pos = y.sum(axis=1).astype(float)
    neg = y.shape[1] - pos
    u = np.sum(r * y, axis=1) - pos * (pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), math.nan)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each pair of rows (Pearson on mid-ranks, as scipy's spearmanr); NaN where a row is
    constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(ra * ra, axis=1) * np.sum(rb * rb, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.sum(ra * rb, axis=1) / den, math.nan)


def margin_rows(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean positive minus mean negative cosine of each row; NaN for a row with one class."""
    pos = y.sum(axis=1)
    neg = y.shape[1] - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.sum(scores * y, axis=1) / pos - np.sum(scores * (1 - y), axis=1) / neg
    return np.where((pos > 0) & (neg > 0), m, math.nan)


def f1_rows(scores: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """F1 of each row at a fixed threshold (0 where it is 0/0, as `classify`)."""
    pred = scores >= threshold
    tp = np.sum(pred & (y == 1), axis=1)
    denom = pred.sum(axis=1) + (y == 1).sum(axis=1)  # 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)


def retention_rows(base: np.ndarray, tuned: np.ndarray, graded: np.ndarray) -> np.ndarray:
    """General-set retention of each row: Spearman(tuned) / Spearman(base), NaN where the base's is not
    positive (a share of nothing)."""
    b = spearman_rows(base, graded)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, spearman_rows(tuned, graded) / b, math.nan)


def paired_retention(base: np.ndarray, a: np.ndarray, b: np.ndarray, graded: np.ndarray, resamples: int,
                     confidence: float, seed: int) -> dict[str, float]:
    """Difference (b minus a) in general-set retention between two models scored on the same general pairs
    (the same base scores for both), with an interval from resampling the pairs once for both."""
    def diff(i: np.ndarray) -> np.ndarray:
        return retention_rows(base[i], b[i], graded[i]) - retention_rows(base[i], a[i], graded[i])

    whole = np.arange(len(graded))[None]
    lo, hi = bootstrap_ci(diff, len(graded), resamples, confidence, seed)
    return {"retention_diff": float(diff(whole)[0]), "retention_diff_ci_low": lo, "retention_diff_ci_high": hi}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, y: np.ndarray, graded: np.ndarray, resamples: int,
                     confidence: float, seed: int) -> dict[str, float]:
    """Difference (b minus a) in AUC and Spearman between two models scored on the same pairs, with
    intervals from resampling the pairs once for both models."""
    out: dict[str, float] = {}
    for name, rows, target in (("auc", auc_rows, y), ("spearman", spearman_rows, graded)):
        # the point estimates through the row functions too (tested equal to sklearn's and scipy's): the
        # report stage then never imports scikit-learn (~1.2 s)
        diff = float(rows(b[None], target[None])[0] - rows(a[None], target[None])[0])
        lo, hi = bootstrap_ci(lambda i, rows=rows, t=target: rows(b[i], t[i]) - rows(a[i], t[i]), len(y),
                              resamples, confidence, seed)
        out[f"{name}_diff"], out[f"{name}_diff_ci_low"], out[f"{name}_diff_ci_high"] = diff, lo, hi
    return out


def sample_indices(n: int, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of at most `cap` of n items (all of them when cap is 0 or >= n)."""
    if not cap or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def pair_points(emb: np.ndarray, index: dict[str, int], pairs: list[dict[str, Any]]) -> np.ndarray:
    """One point per pair for clustering: [e1 * e2, |e1 - e2|], symmetric in the pair's order.

    The elementwise product sums to the cosine; the absolute difference shows where the texts disagree.
    """
    a = emb[[index[p["text_1"]] for p in pairs]]
    b = emb[[index[p["text_2"]] for p in pairs]]
    return np.concatenate([a * b, np.abs(a - b)], axis=1)


def import_umap() -> Any:
    """umap, with its numba functions compiled once and cached on disk instead of in every process.

    umap-learn 0.5 jits its functions without `cache=True`: each evaluate stage paid ~9 s compiling them.
    While umap (and pynndescent, which it imports) load, `numba.njit` defaults to `cache=True`; the cache
    sits beside their sources (or under NUMBA_CACHE_DIR) and numba invalidates it when a source changes.
    """
    import sys

    if "umap" in sys.modules:
        return sys.modules["umap"]
    import numba

    stock = numba.njit

    def njit(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cache", True)
        return stock(*args, **kwargs)

    numba.njit = njit
    try:
        import umap
    finally:
        numba.njit = stock
    return umap


def cluster_purity(points: np.ndarray, y: np.ndarray, neighbors: int, min_dist: float, min_cluster: int,
                   min_samples: int, seed: int, seeds: int = 1) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """`cluster_layout` at `seeds` UMAP seeds (seed, seed + 1, ...): the run of median purity, with the lowest
    and highest purity of all (cluster_purity_seed_min / _max).

    Why several: a UMAP layout is chaotic in its input. On the demo, embeddings moved by 1e-7 (float rounding)
    gave the full fine-tune one-layout purities from 0.73 to 0.96 (bench/invariance.json): one layout's
    figure is a draw, and the spread says how much of a difference between models a purity can carry.
    """
    runs = [cluster_layout(points, y, neighbors, min_dist, min_cluster, min_samples, seed + k) for k in range(seeds)]
    purity = [r[0]["cluster_purity"] for r in runs]
    if any(math.isnan(x) for x in purity):
        return runs[0]
    order = sorted(range(seeds), key=lambda k: (purity[k], k))
    metrics, coords, labels = runs[order[(seeds - 1) // 2]]  # the median run (the lower one of an even count)
    metrics = dict(metrics, cluster_purity_seed_min=min(purity), cluster_purity_seed_max=max(purity),
                   cluster_seeds=float(seeds))
    return metrics, coords, labels


def cluster_layout(points: np.ndarray, y: np.ndarray, neighbors: int, min_dist: float, min_cluster: int,
                   min_samples: int, seed: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """UMAP to 2-d (cosine), then HDBSCAN; purity over clustered points against the chance level.

    Returns the metrics, the 2-d coordinates and the cluster labels (-1 = noise). ARI and NMI compare the
    clusters of non-noise points with the labels.
    """
    import hdbscan
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    umap = import_umap()
    coords = umap.UMAP(n_neighbors=min(neighbors, len(points) - 1), min_dist=min_dist, metric="cosine",
                       random_state=seed, n_jobs=1).fit_transform(points)
    labels = hdbscan.HDBSCAN(min_cluster_size=min_cluster, min_samples=min_samples).fit_predict(coords)
    kept = labels >= 0
    chance = float(max(np.mean(y), 1 - np.mean(y)))
    metrics = {"cluster_chance": chance, "cluster_noise_share": float(1 - np.mean(kept)),
               "clusters": float(len(set(labels[kept].tolist())))}
    if np.any(kept):
        majority = sum(int(max(np.sum(y[labels == c]), np.sum(1 - y[labels == c]))) for c in set(labels[kept].tolist()))
        metrics["cluster_purity"] = majority / int(np.sum(kept))
        metrics["cluster_ari"] = float(adjusted_rand_score(y[kept], labels[kept]))
        metrics["cluster_nmi"] = float(normalized_mutual_info_score(y[kept], labels[kept]))
    else:
        metrics.update(cluster_purity=math.nan, cluster_ari=math.nan, cluster_nmi=math.nan)
    return metrics, coords, labels


def breakdown(scores: np.ndarray, y: np.ndarray, groups: list[str], threshold: float) -> dict[str, dict[str, float]]:
    """Per group: n, class counts, per-class mean cosine, accuracy at the dev threshold, and margin and AUC
    only where both classes are present (a one-class margin means nothing)."""
    out: dict[str, dict[str, float]] = {}
    g = np.array(groups)
    for name in sorted(set(groups)):
        m = g == name
        s, t = scores[m], y[m]
        row: dict[str, float] = {"n": int(m.sum()), "positives": int(t.sum()), "negatives": int((1 - t).sum()),
                                 "accuracy": float(np.mean((s >= threshold) == (t == 1)))}
        row.update({k: v for k, v in margin(s, t).items() if k != "margin"})
        if both_classes(t):
            row["margin"] = row["mean_cos_pos"] - row["mean_cos_neg"]
            row["auc"] = auc(s, t)
        out[name] = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
    return out


def false_positives(scores: np.ndarray, y: np.ndarray, pairs: list[dict[str, Any]], threshold: float,
                    worst: int) -> dict[str, Any]:
    """Negatives scored at or above the threshold: count, by pair_type and category, and the worst ones."""
    fp = np.where((y == 0) & (scores >= threshold))[0]
    by = {key: {} for key in ("pair_type", "category")}
    for i in fp:
        for key in by:
            by[key][pairs[i][key]] = by[key].get(pairs[i][key], 0) + 1
    order = fp[np.argsort(-scores[fp], kind="stable")][:worst]
    rows = [{"cosine": round(float(scores[i]), 4), "text_1": pairs[i]["text_1"], "text_2": pairs[i]["text_2"],
             "pair_type": pairs[i]["pair_type"], "category": pairs[i]["category"]} for i in order]
    return {"count": int(len(fp)), "negatives": int(np.sum(y == 0)), "by_pair_type": dict(sorted(by["pair_type"].items())),
            "by_category": dict(sorted(by["category"].items())), "worst": rows}


def errors(scores: np.ndarray, y: np.ndarray, pairs: list[dict[str, Any]], threshold: float,
           worst: int) -> dict[str, dict[str, dict[str, Any]]]:
    """False positives and false negatives at `threshold`, grouped by pair_type (most errors first): per
    group the count, how many pairs of that type carry that label, how many of the errors are pairs whose
    label the data marks as flipped (``label_flipped``: a label error, not a model error), and the `worst`
    errors with their texts (false positives highest cosine first, false negatives lowest first)."""
    pred = scores >= threshold
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, label, mask, sign in (("fp", 0, (y == 0) & pred, -1.0), ("fn", 1, (y == 1) & ~pred, 1.0)):
        totals = Counter(p["pair_type"] for p, t in zip(pairs, y, strict=True) if t == label)
        groups: dict[str, list[int]] = {}
        for i in np.where(mask)[0]:
            groups.setdefault(pairs[i]["pair_type"], []).append(int(i))
        out[kind] = {
            t: {"count": len(ix), "of": totals[t], "flipped": sum(bool(pairs[i].get("label_flipped")) for i in ix),
                "worst": [{"cosine": round(float(scores[i]), 4), "text_1": pairs[i]["text_1"],
                           "text_2": pairs[i]["text_2"], "category": pairs[i]["category"],
                           "label_flipped": bool(pairs[i].get("label_flipped"))}
                          for i in sorted(ix, key=lambda i: (sign * scores[i], i))[:worst]]}
            for t, ix in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))}
    return out
