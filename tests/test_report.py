"""The report renders from fixture metrics: charts, tables, no external URL, escaped data text."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pairtune.evaluation import evaluate
from pairtune.report import MODELS, Inputs, build
from test_metrics import _cfg, _synthetic


@pytest.fixture(scope="module")
def inputs():
    dev, e_dev = _synthetic(60, 0.0, 1)
    ev, e_ev = _synthetic(60, 0.0, 2)
    for p in ev:  # data text reaches the page through the breakdown (category) and false-positive tables
        if p["category"] == "d":
            p["category"] = "<script>alert(1)</script>"
        if p["label"] == 0:
            p["text_1"] += " <script>alert(2)</script>"
    index = {t: i for i, t in enumerate([t for p in dev + ev for t in (p["text_1"], p["text_2"])])}
    metrics, details = {}, {}
    for k, name in enumerate(MODELS):
        emb = np.concatenate([e_dev, e_ev])
        if name == "base":  # invert the base: flip the second text of every pair
            emb = emb * np.tile([1, -1], len(emb) // 2)[:, None]
        else:
            emb = emb + k * 0.01
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        res = evaluate(emb.astype(np.float32), index, dev, ev, _cfg(worst_errors=60), 0.5, 0)
        metrics[name], details[name] = res.metrics, res.details
    train = {m: {"trainable_params": t, "total_params": 1000, "trainable_share": t / 1000, "artifact_bytes": 3 * t,
                 "steps": 10, "final_loss": 0.1, "train_wall_s": 1.5, "device_cuda": 0, "lr": 1e-3}
             for m, t in (("full", 1000), ("lora", 10))}
    curves = {m: {"train/loss": [(10, 0.5), (20, 0.3)], "dev/auc": [(10, 0.7), (20, 0.9)],
                  "dev/spearman": [(10, 0.3), (20, 0.5)]} for m in ("full", "lora")}
    data = {"train": {"pairs": 100, "positives": 50, "positive_share": 0.5}, "dev": {"pairs": 60, "positives": 30,
            "positive_share": 0.5}, "eval": {"pairs": 60, "positives": 30, "positive_share": 0.5},
            "duplicates_dropped": {"train": 0, "dev": 0, "eval": 0}, "overlap_dropped": {"train_eval": 0},
            "dev_source": 1, "binary_labels": 1}
    return Inputs(metrics=metrics, details=details, train=train, curves=curves, data=data,
                  params={"seed": 0, "train.epochs": 1, "train.lora.target_modules": ["query", "value"]},
                  versions={"torch": "x"}, positive_threshold=0.5, bootstrap=50, confidence=0.95, seed=0, examples=60,
                  interpolate={m: {"general": 1, "general_spearman_base": 0.8, "general_spearman_tuned": s,
                                   "retention_tuned": s / 0.8, "retention_tuned_ci_low": s / 0.8 - 0.02,
                                   "retention_tuned_ci_high": s / 0.8 + 0.02, "alpha": 0.7, "retention_met": 1,
                                   "retention": 0.98, "eval_auc": 0.97, "eval_spearman": 0.8}
                               for m, s in (("full", 0.76), ("lora", 0.7))},
                  alpha_curves={m: [{"alpha": a, "dev_auc": 0.2 + 0.7 * a, "general_spearman": 0.8 - 0.1 * a,
                                     "retention": 1 - 0.1 * a / 0.8} for a in (0.0, 0.5, 0.7, 1.0)]
                                for m in ("full", "lora")})


def test_report_has_charts_tables_and_verdict(inputs):
    html, comparison = build(inputs)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 8
    assert "Fine-tuning fixed the ranking" in html.split("</p>")[0] + html
    for needle in ("Δ LoRA vs base", "LoRA share of full", "What each model still gets wrong", "trainable params", "Hyperparameters"):
        assert needle in html
    assert {"full_vs_base_auc_diff", "lora_vs_full_auc_diff", "lora_share_of_full_gain_auc"} <= set(comparison)
    assert comparison["full_vs_base_auc_diff"] > 0


def test_report_is_offline_and_escapes_data_text(inputs):
    html, _ = build(inputs)
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr.startswith("data:"), attr
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html


def test_report_is_deterministic(inputs):
    assert build(inputs)[0] == build(inputs)[0]


def test_report_shows_retention_and_the_tradeoff(inputs):
    html, _ = build(inputs)
    assert "What fine-tuning costs elsewhere" in html and "Forgetting and buying it back" in html
    assert "<td>0.95 [0.93, 0.97]</td>" in html  # full's retention with its interval, in one cell
    assert "General-set retention (Spearman / base&#39;s)" in html  # ... and in the headline table
    assert "<td>LoRA vs full</td>" in html and "full_vs_base_auc_diff_ci_low" not in html  # readable pairs table
    assert "<td>train.lora.target_modules</td><td class=\"text\">query, value</td>" in html  # a row, not dict text


def test_report_says_when_the_general_check_is_off(inputs):
    import dataclasses

    off = dataclasses.replace(inputs, interpolate={m: {"general": 0, "alpha": 1.0, "eval_auc": 0.9}
                                                   for m in ("full", "lora")},
                              alpha_curves={m: [{"alpha": a, "dev_auc": 0.5 + a / 3} for a in (0.0, 0.5, 1.0)]
                                            for m in ("full", "lora")})
    html, _ = build(off)
    assert "General-quality check off" in html and "dev AUC along alpha only" in html


def test_report_says_what_each_model_gets_wrong(inputs):
    """A plain sentence per model at the top, and the errors by pair type with their texts, counts matching."""
    html, _ = build(inputs)
    top = html.split("<h2>")[0]
    for name in MODELS:
        e = inputs.details[name]["errors"]
        n_fp = sum(g["count"] for g in e["fp"].values())
        n_fn = sum(g["count"] for g in e["fn"].values())
        assert n_fp == inputs.details[name]["fp"]["count"]
        negatives = int(inputs.metrics[name]["n_pairs"] - inputs.metrics[name]["n_positives"])
        assert f"{name} (threshold" in top and f"{n_fp} of {negatives} incompatible pairs pass as compatible" in top
        assert f"{n_fn} of {int(inputs.metrics[name]['n_positives'])} compatible pairs are rejected" in top
    base_fp = inputs.details["base"]["errors"]["fp"]
    worst = next(iter(base_fp.values()))["worst"][0]
    assert worst["text_2"] in html  # the texts themselves are shown


def test_error_groups_are_ordered_by_count_not_by_name():
    from pairtune.report import by_count

    groups = {"a": {"count": 1}, "b": {"count": 5}, "c": {"count": 5}}
    assert list(by_count(groups)) == ["b", "c", "a"]  # details.json comes back with sorted keys


def test_report_says_which_figures_come_from_a_sample(inputs):
    """evaluate.cluster_sample and interpolate.grid_pairs: the captions name the sample; the charts still render."""
    import dataclasses

    from pairtune import metrics as M

    details = {n: dict(d) for n, d in inputs.details.items()}
    metrics = {n: dict(m, cluster_points=20) for n, m in inputs.metrics.items()}
    idx = M.sample_indices(len(details["base"]["labels"]), 20, 0).tolist()
    for d in details.values():
        d["umap"], d["cluster_index"] = [d["umap"][i] for i in idx], idx
    interp = {m: dict(i, general_pairs=1500, general_grid_pairs=1000) for m, i in inputs.interpolate.items()}
    html, _ = build(dataclasses.replace(inputs, metrics=metrics, details=details, interpolate=interp))
    assert "A seeded sample of 20 of the 60 eval pairs (evaluate.cluster_sample)" in html
    assert "on a seeded sample of 1000 of the 1500 general pairs" in html
    assert "seeded sample" not in build(inputs)[0]


def test_report_shows_each_export_and_says_when_one_was_left_out(inputs):
    import dataclasses

    ok = {"status": {"standalone": "ok", "onnx": "ok", "int8": "ok"}, "onnx_auc": 0.97, "onnx_spearman": 0.8,
          "int8_auc": 0.969, "int8_spearman": 0.799, "bytes_standalone": 90_000_000, "bytes_onnx": 91_000_000,
          "bytes_int8": 23_400_000}
    why = "refused: eval AUC delta 0.00765 > int8_auc_tol 0.005"
    refused = {**{k: v for k, v in ok.items() if not k.startswith(("int8_", "bytes_int8"))},
               "status": {"standalone": "ok", "onnx": "ok", "int8": why}}
    html, _ = build(dataclasses.replace(inputs, exports={"full": ok, "lora": refused}))
    assert "<h2>Exports</h2>" in html and html.count("<td>int8</td>") == 2
    assert f'<td class="text">{why.replace(">", "&gt;")}</td>' in html  # the reason, in the table (escaped)
    top = html.split("<h2>")[0]
    assert "lora&#39;s int8 was not shipped (" + why.replace(">", "&gt;") in top  # and at the top of the page
    assert "full&#39;s" not in top and "<td>23.4</td>" in html
    html, _ = build(dataclasses.replace(inputs, exports={"full": ok, "lora": ok}))
    assert 'class="warn"' not in html.split("<h2>")[0]  # nothing left out, nothing said


def test_report_says_when_the_general_set_was_unusable(inputs):
    import dataclasses

    skipped = "data/general/x.tsv: the base model's Spearman on the general set is -0.100; retention is ..."
    off = dataclasses.replace(inputs, interpolate={m: {"general": 0, "general_skipped": skipped, "alpha": 1.0,
                                                       "eval_auc": 0.9} for m in ("full", "lora")},
                              alpha_curves={m: [{"alpha": a, "dev_auc": 0.5 + a / 3} for a in (0.0, 0.5, 1.0)]
                                            for m in ("full", "lora")})
    html, _ = build(off)
    assert "General-quality check skipped: data/general/x.tsv: the base model&#39;s Spearman" in html
    assert "General-quality check off" not in html


def test_report_names_the_rule_that_chose_alpha(inputs):
    import dataclasses

    html, _ = build(dataclasses.replace(inputs, params={**inputs.params, "interpolate.rule": "auc_drop",
                                                        "interpolate.max_auc_drop": 0.005}))
    assert "interpolate.rule auc_drop: the most general retention among alphas whose dev AUC is within 0.005" in html
    html, _ = build(dataclasses.replace(inputs, params={**inputs.params, "interpolate.rule": "retention",
                                                        "interpolate.min_retention": 0.97}))
    assert "interpolate.rule retention: the best dev AUC among alphas keeping 0.97" in html
