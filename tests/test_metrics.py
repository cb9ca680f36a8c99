"""Metric functions against scikit-learn / scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, roc_auc_score

from pairtune import metrics as M
from pairtune.evaluation import evaluate
from pairtune.params import Evaluate

rng = np.random.default_rng(0)
S = rng.normal(size=200)
Y = (S + rng.normal(size=200) > 0).astype(int)


def test_against_reference_libraries():
    assert M.auc(S, Y) == pytest.approx(roc_auc_score(Y, S))
    assert M.spearman(S, Y.astype(float)) == pytest.approx(stats.spearmanr(S, Y).statistic)
    assert M.pearson(S, Y.astype(float)) == pytest.approx(stats.pearsonr(S, Y).statistic)
    t, p = M.welch(S, Y)
    ref = stats.ttest_ind(S[Y == 1], S[Y == 0], equal_var=False)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))


def test_hand_computed_cases():
    s = np.array([0.9, 0.8, 0.3, 0.1])
    y = np.array([1, 1, 0, 0])
    assert M.auc(s, y) == 1.0 and M.auc(-s, y) == 0.0  # perfect and inverted rankings
    assert M.margin(s, y) == pytest.approx({"mean_cos_pos": 0.85, "mean_cos_neg": 0.2, "margin": 0.65})
    # pooled SD with ddof 1: both groups have var 0.005 and 0.02 -> pooled sqrt(0.0125)
    assert M.cohens_d(s, y) == pytest.approx(0.65 / math.sqrt(0.0125))
    ties = np.array([0.5, 0.5, 0.5, 0.5])
    assert M.auc(ties, y) == 0.5  # all tied: chance
    assert math.isnan(M.spearman(ties, y.astype(float)))  # zero variance: undefined, not an exception
    assert math.isnan(M.cohens_d(ties, y))


def test_one_class_is_undefined_not_a_crash():
    y = np.ones(4, dtype=int)
    s = np.array([0.1, 0.2, 0.3, 0.4])
    assert math.isnan(M.auc(s, y)) and math.isnan(M.cohens_d(s, y)) and math.isnan(M.margin(s, y)["margin"])


def test_best_f1_threshold_matches_brute_force_over_full_range():
    t = M.best_f1_threshold(S, Y)
    best = max(f1_score(Y, S >= c) for c in np.unique(S))
    assert f1_score(Y, S >= t) == pytest.approx(best)
    neg = np.array([-0.9, -0.8, -0.7, -0.2])  # all-negative cosines: the threshold must be allowed below 0
    assert M.best_f1_threshold(neg, np.array([0, 1, 1, 1])) < -0.7


def _loop_threshold(scores, y):
    """The threshold search as it was: classify() at every distinct cut, first best in descending order."""
    cuts = np.unique(scores)[::-1]
    f1 = [M.classify(scores, y, c)["f1"] for c in cuts]
    i = int(np.argmax(f1))
    return float((cuts[i] + (cuts[i + 1] if i + 1 < len(cuts) else -1.0)) / 2)


@pytest.mark.parametrize("seed", range(6))
def test_best_f1_threshold_is_the_per_cut_search_exactly(seed):
    """The sorted-count search picks the same threshold as classify() at every cut, ties and all."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(0.3 * y, 0.3), int(rng.integers(1, 4)))  # coarse rounding: many tied scores
    assert M.best_f1_threshold(s, y) == _loop_threshold(s, y)
    assert M.best_f1_threshold(s, np.zeros(n, dtype=int)) == _loop_threshold(s, np.zeros(n, dtype=int))


def test_recall_threshold():
    s = np.array([0.9, 0.7, 0.5, 0.3, 0.2])
    y = np.array([1, 1, 1, 1, 0])
    assert M.recall_threshold(s, y, 0.75) == 0.5
    assert M.classify(s, y, M.recall_threshold(s, y, 0.75))["recall"] >= 0.75


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    fn = lambda i: M.auc_rows(S[i], Y[i])  # noqa: E731
    a = M.bootstrap_ci(fn, len(S), 200, 0.95, seed=3)
    assert a == M.bootstrap_ci(fn, len(S), 200, 0.95, seed=3)
    assert a != M.bootstrap_ci(fn, len(S), 200, 0.95, seed=4)
    assert a[0] < M.auc(S, Y) < a[1]


def test_row_statistics_equal_sklearn_and_scipy_per_row():
    r = np.random.default_rng(5)
    y = r.integers(0, 2, (40, 60))
    y[0] = 1  # one class: undefined
    s = np.round(r.normal(0.3 * y, 0.3), 1)  # coarse: many ties
    g = np.round(r.random((40, 60)), 1)
    g[1] = 0.5  # constant: undefined
    auc, rho = M.auc_rows(s, y), M.spearman_rows(s, g)
    margin, f1 = M.margin_rows(s, y), M.f1_rows(s, y, 0.2)
    for k in range(40):
        assert np.isnan(auc[k]) if k == 0 else auc[k] == pytest.approx(M.auc(s[k], y[k]), abs=1e-12)
        assert np.isnan(rho[k]) if k == 1 else rho[k] == pytest.approx(M.spearman(s[k], g[k]), abs=1e-12)
        assert np.isnan(margin[k]) if k == 0 else margin[k] == pytest.approx(M.margin(s[k], y[k])["margin"])
        assert f1[k] == pytest.approx(M.classify(s[k], y[k], 0.2)["f1"])


def test_bootstrap_equals_one_resample_at_a_time(monkeypatch):
    """Chunked, vectorised resampling gives the interval of the per-resample loop it replaced."""
    rng_ = np.random.default_rng(3)
    values = [M.auc(S[i], Y[i]) for i in (rng_.integers(0, len(S), len(S)) for _ in range(300))]
    expected = tuple(np.quantile([v for v in values if not np.isnan(v)], [0.025, 0.975]))
    monkeypatch.setattr(M, "BOOTSTRAP_CELLS", 7 * len(S) + 3)  # 7 rows a chunk, the last one short
    assert M.bootstrap_ci(lambda i: M.auc_rows(S[i], Y[i]), len(S), 300, 0.95, 3) == pytest.approx(expected,
                                                                                                 abs=1e-12)


def test_paired_bootstrap_sign():
    worse = S + rng.normal(scale=3, size=len(S))
    out = M.paired_bootstrap(worse, S, Y, Y.astype(float), 200, 0.95, 0)
    assert out["auc_diff"] > 0 and out["auc_diff_ci_low"] > 0


def test_breakdown_single_class_groups_get_accuracy_not_margin():
    s = np.array([0.9, 0.8, 0.2, 0.7, 0.1])
    y = np.array([1, 1, 0, 0, 0])
    table = M.breakdown(s, y, ["a", "a", "a", "b", "b"], threshold=0.5)
    assert table["a"]["auc"] == 1.0 and "margin" in table["a"]
    assert "margin" not in table["b"] and "auc" not in table["b"]
    assert table["b"]["accuracy"] == 0.5 and table["b"]["n"] == 2 and table["b"]["positives"] == 0


def _cfg(**kw):
    base = dict(batch_size=8, bootstrap=50, confidence=0.95, recall_target=0.9, worst_errors=3, cluster=True,
                cluster_sample=0, cluster_seeds=2, umap_neighbors=5, umap_min_dist=0.1, hdbscan_min_cluster=5, hdbscan_min_samples=2)
    return Evaluate(**(base | kw))


def _synthetic(n, shift, seed):
    """Pairs whose cosine is controlled: text_2 embedding = rotation of text_1 by an angle set by the label."""
    r = np.random.default_rng(seed)
    pairs, emb = [], []
    for i in range(n):
        label = i % 2
        a = r.normal(size=8)
        a /= np.linalg.norm(a)
        b = a + r.normal(scale=0.6 if label else 1.5, size=8) + shift
        b /= np.linalg.norm(b)
        emb += [a, b]
        pairs.append({"text_1": f"s{seed}-{i}a", "text_2": f"s{seed}-{i}b", "label": float(label),
                      "category": "c" if i % 3 else "d", "pair_type": "x" if i % 4 else "y"})
    return pairs, np.array(emb, dtype=np.float32)


def test_threshold_comes_from_dev_and_is_applied_to_eval():
    dev, e_dev = _synthetic(40, 0.0, 1)
    ev, e_ev = _synthetic(40, 0.0, 2)
    emb = np.concatenate([e_dev, e_ev])
    index = {t: i for i, t in enumerate([t for p in dev + ev for t in (p["text_1"], p["text_2"])])}
    res = evaluate(emb, index, dev, ev, _cfg(cluster=False), 0.5, 0)
    s_dev = M.pair_scores(emb, index, dev)
    y_dev = np.array([p["label"] for p in dev]).astype(int)
    assert res.metrics["threshold"] == pytest.approx(M.best_f1_threshold(s_dev, y_dev), abs=1e-6)
    s_ev = M.pair_scores(emb, index, ev)
    y_ev = np.array([p["label"] for p in ev]).astype(int)
    assert res.metrics["f1"] == pytest.approx(f1_score(y_ev, s_ev >= M.best_f1_threshold(s_dev, y_dev)), abs=1e-6)
    assert res.metrics["auc"] == pytest.approx(roc_auc_score(y_ev, s_ev), abs=1e-6)
    assert all(isinstance(v, float) and math.isfinite(v) for v in res.metrics.values())
    assert res.metrics["f1_oracle"] >= res.metrics["f1"] - 1e-9
    assert "cluster_purity" not in res.metrics and res.details["umap"] is None  # evaluate.cluster: false


def test_cluster_purity_bounds():
    dev, e = _synthetic(60, 0.0, 5)
    index = {t: i for i, t in enumerate([t for p in dev for t in (p["text_1"], p["text_2"])])}
    y = np.array([int(p["label"]) for p in dev])
    out, coords, labels = M.cluster_purity(M.pair_points(e, index, dev), y, 5, 0.1, 5, 2, 0)
    assert coords.shape == (60, 2) and len(labels) == 60
    assert out["cluster_chance"] == 0.5
    assert 0.0 <= out["cluster_noise_share"] <= 1.0
    if out["clusters"] > 0:  # with two classes each cluster's majority is at least half of it
        assert 0.5 <= out["cluster_purity"] <= 1.0
        assert out["clusters"] == len(set(labels[labels >= 0].tolist()))
    else:
        assert out["cluster_noise_share"] == 1.0


def test_umap_numba_functions_are_cached_on_disk():
    """Each evaluate stage paid ~9 s compiling umap's numba functions; import_umap makes them cache=True.
    In a fresh process, since an earlier `import umap` in this one would have compiled them uncached."""
    import subprocess
    import sys

    code = ("from pairtune.metrics import import_umap; import numba; stock = numba.njit; u = import_umap(); "
            "from umap import layouts, umap_; "
            "kinds = {type(getattr(m, n)._cache).__name__ for m in (layouts, umap_) for n in dir(m) "
            "if hasattr(getattr(m, n), '_cache')}; "
            "print(sorted(kinds), numba.njit is stock)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[-2] == "['FunctionCache'] True"  # all cached, and numba.njit put back


@pytest.mark.parametrize("threshold", [-2.0, -0.3, 0.0, 0.41, 2.0])
def test_classify_matches_sklearn(threshold):
    """classify counts the confusion matrix itself (speed); it must agree with sklearn, zero divisions included."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(3)
    for y in (rng.integers(0, 2, 200), np.zeros(50, dtype=int), np.ones(50, dtype=int)):
        s = np.round(rng.uniform(-1, 1, len(y)), 1)  # rounded: many ties at the threshold
        pred = s >= threshold
        got = M.classify(s, y, threshold)
        want = {"f1": f1_score(y, pred, zero_division=0), "precision": precision_score(y, pred, zero_division=0),
                "recall": recall_score(y, pred, zero_division=0), "accuracy": accuracy_score(y, pred)}
        assert got == pytest.approx(want, abs=1e-12)


def test_errors_grouped_by_pair_type_worst_first():
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.05, 0.95, 0.6])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    types = ["a", "a", "a", "b", "c", "c", "c", "d"]
    pairs = [{"text_1": f"t{i}", "text_2": f"u{i}", "category": "k", "pair_type": t, "label_flipped": i == 1}
             for i, t in enumerate(types)]
    e = M.errors(scores, y, pairs, 0.5, worst=5)
    assert list(e["fp"]) == ["a", "b"]  # most errors first
    assert e["fp"]["a"] | {"worst": None} == {"count": 2, "of": 3, "flipped": 1, "worst": None}
    assert [r["cosine"] for r in e["fp"]["a"]["worst"]] == [0.9, 0.8]  # highest first
    assert e["fn"]["c"]["count"] == 2 and [r["cosine"] for r in e["fn"]["c"]["worst"]] == [0.05, 0.2]  # lowest first
    assert "d" not in e["fn"] and e["fp"]["a"]["worst"][1]["label_flipped"]
    assert M.errors(scores, y, pairs, 0.5, worst=1)["fp"]["a"]["worst"] == e["fp"]["a"]["worst"][:1]


def test_clustering_sees_a_seeded_sample_capped_by_cluster_sample():
    dev, e_dev = _synthetic(40, 0.0, 1)
    ev, e_ev = _synthetic(80, 0.0, 2)
    emb = np.concatenate([e_dev, e_ev])
    index = {t: i for i, t in enumerate([t for p in dev + ev for t in (p["text_1"], p["text_2"])])}
    capped = evaluate(emb, index, dev, ev, _cfg(cluster_sample=30), 0.5, 0)
    idx = capped.details["cluster_index"]
    assert capped.metrics["cluster_points"] == 30 == len(capped.details["umap"]) == len(idx) == len(set(idx))
    assert idx == sorted(idx) and idx == M.sample_indices(80, 30, 0).tolist()
    whole = evaluate(emb, index, dev, ev, _cfg(cluster_sample=100), 0.5, 0)
    assert whole.metrics["cluster_points"] == 80 and whole.details["cluster_index"] is None
    for key in ("auc", "spearman", "f1", "threshold"):  # only the clustering sees the sample
        assert capped.metrics[key] == whole.metrics[key]


def test_cluster_purity_is_the_median_of_its_seeds():
    """One UMAP layout is a draw (#33 follow-up): the reported purity is the median run's, with the range."""
    dev, e = _synthetic(60, 0.0, 5)
    index = {t: i for i, t in enumerate([t for p in dev for t in (p["text_1"], p["text_2"])])}
    y = np.array([int(p["label"]) for p in dev])
    points = M.pair_points(e, index, dev)
    single = [M.cluster_layout(points, y, 5, 0.1, 5, 2, s)[0]["cluster_purity"] for s in range(3)]
    out, coords, labels = M.cluster_purity(points, y, 5, 0.1, 5, 2, 0, seeds=3)
    assert out["cluster_purity"] == sorted(single)[1]
    assert (out["cluster_purity_seed_min"], out["cluster_purity_seed_max"]) == (min(single), max(single))
    median_run = M.cluster_layout(points, y, 5, 0.1, 5, 2, single.index(sorted(single)[1]))
    assert np.array_equal(labels, median_run[2])  # the layout shown is the median run's
