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
        res = evaluate(emb.astype(np.float32), index, dev, ev, _cfg(worst_fp=60), 0.5, 0)
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
                  params={"seed": 0, "train": {"epochs": 1}}, versions={"torch": "x"}, positive_threshold=0.5,
                  bootstrap=50, confidence=0.95, seed=0, worst_fp=60)


def test_report_has_charts_tables_and_verdict(inputs):
    html, comparison = build(inputs)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 8
    assert "Fine-tuning fixed the ranking" in html.split("</p>")[0] + html
    for needle in ("Δ LoRA vs base", "LoRA share of full", "Worst false positives", "trainable params", "Hyperparameters"):
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
