"""The report renders from fixture metrics: charts, tables, no external URL, escaped data text."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pairtune.evaluation import evaluate
from pairtune.report import Inputs, build
from test_metrics import _cfg, _synthetic


@pytest.fixture(scope="module")
def inputs():
    return _make_inputs()


def _make_inputs(edit=None, positive_threshold: float = 0.5, binary: int = 1, names=("compatible", "incompatible"),
                 methods=("full", "lora")):
    """Inputs from synthetic eval/dev pairs through the real evaluate(); `edit(pair)` changes each pair first."""
    dev, e_dev = _synthetic(60, 0.0, 1)
    ev, e_ev = _synthetic(60, 0.0, 2)
    for p in dev + ev if edit else ():
        edit(p)
    for p in ev:  # data text reaches the page through the breakdown (category) and false-positive tables
        if p["category"] == "d":
            p["category"] = "<script>alert(1)</script>"
        if p["label"] == 0:
            p["text_1"] += " <script>alert(2)</script>"
    index = {t: i for i, t in enumerate([t for p in dev + ev for t in (p["text_1"], p["text_2"])])}
    metrics, details, roc = {}, {}, {}
    for k, name in enumerate(("base", *methods)):
        emb = np.concatenate([e_dev, e_ev])
        if name == "base":  # invert the base: flip the second text of every pair
            emb = emb * np.tile([1, -1], len(emb) // 2)[:, None]
        else:
            emb = emb + k * 0.01
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        res = evaluate(emb.astype(np.float32), index, dev, ev, _cfg(worst_errors=60), positive_threshold, 0)
        metrics[name], details[name], roc[name] = res.metrics, res.details, res.roc
    train = {m: {"trainable_params": t, "total_params": 1000, "trainable_share": t / 1000, "artifact_bytes": 3 * t,
                 "steps": 10, "final_loss": 0.1, "train_wall_s": 1.5, "device_cuda": 0, "lr": 1e-3}
             for m, t in zip(methods, (1000, 10, 40, 5, 80, 20), strict=False)}
    curves = {m: {"train/loss": [(10, 0.5), (20, 0.3)], "dev/auc": [(10, 0.7), (20, 0.9)],
                  "dev/spearman": [(10, 0.3), (20, 0.5)]} for m in methods}
    data = {"train": {"pairs": 100, "positives": 50, "positive_share": 0.5}, "dev": {"pairs": 60, "positives": 30,
            "positive_share": 0.5}, "eval": {"pairs": 60, "positives": 30, "positive_share": 0.5},
            "duplicates_dropped": {"train": 0, "dev": 0, "eval": 0}, "overlap_dropped": {"train_eval": 0},
            "dev_source": 1, "binary_labels": binary}
    return Inputs(metrics=metrics, details=details, roc=roc, train=train, curves=curves, data=data,
                  params={"seed": 0, "train.epochs": 1, "train.lora.target_modules": ["query", "value"]},
                  versions={"torch": "x"}, positive_threshold=positive_threshold, bootstrap=50, confidence=0.95,
                  seed=0, examples=60, names=names,
                  interpolate={m: {"general": 1, "general_spearman_base": 0.8, "general_spearman_tuned": s,
                                   "retention_tuned": s / 0.8, "retention_tuned_ci_low": s / 0.8 - 0.02,
                                   "retention_tuned_ci_high": s / 0.8 + 0.02, "alpha": 0.7, "retention_met": 1,
                                   "retention": 0.98, "eval_auc": 0.97, "eval_spearman": 0.8}
                               for m, s in zip(methods, (0.76, 0.7, 0.72, 0.78, 0.6, 0.75), strict=False)},
                  alpha_curves={m: [{"alpha": a, "dev_auc": 0.2 + 0.7 * a, "general_spearman": 0.8 - 0.1 * a,
                                     "retention": 1 - 0.1 * a / 0.8} for a in (0.0, 0.5, 0.7, 1.0)]
                                for m in methods}, methods=tuple(methods))


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
    for name in inputs.models:
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


def test_report_says_which_alphas_the_descending_search_left_unscored(inputs):
    """interpolate.search: descend scores alpha 0 and the grid from 1 down to the first point off the plateau:
    the chart joins the base to that point with a dotted jump and the caption says why the rest is missing."""
    import dataclasses

    curves = {m: [c[0], *c[len(c) // 2:]] for m, c in inputs.alpha_curves.items()}
    interp = {m: dict(i, grid_points=len(inputs.alpha_curves[m])) for m, i in inputs.interpolate.items()}
    html, _ = build(dataclasses.replace(inputs, alpha_curves=curves, interpolate=interp))
    lowest = curves["lora"][1]["alpha"]
    assert f"LoRA: alphas between 0 and {lowest:g} were not scored (dotted)" in html
    assert "were not scored" not in build(dataclasses.replace(inputs, interpolate=interp))[0]
    from pairtune.report import _base_floor  # the far-below base is drawn at a floor, not squeezing the curves

    floor = _base_floor(dataclasses.replace(inputs, alpha_curves=curves, interpolate=interp), sorted(curves))
    assert floor is not None and curves["lora"][0]["dev_auc"] < floor < min(r["dev_auc"] for r in curves["lora"][1:])
    assert _base_floor(dataclasses.replace(inputs, interpolate=interp), sorted(curves)) is None  # nothing skipped


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
    assert "was not shipped" not in html.split("<h2>")[0]  # nothing left out, nothing said


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


# --- the fair verdict (#22) and the data's own terms (#27) -----------------------------------------------------


@pytest.mark.parametrize("curve, base, finding", [
    ([0.70, 0.80, 0.86, 0.92], 0.30, "under_trained"),  # still rising at the last epoch
    ([0.80, 0.93, 0.90, 0.86], 0.30, "over_fitted"),  # peaked at epoch 2
    ([0.302, 0.30, 0.303, 0.301], 0.30, "did_nothing"),  # no better than the base
    ([0.80, 0.90, 0.931, 0.933], 0.30, "converged"),  # within the plateau over the last epoch
    ([0.80, 0.90, 0.931, 0.933], None, "converged"),  # no base figure (interpolation off): judged on its own
    # LoRA+ on the harder demo (bench/methods.json, 2026-12-07): collapsed after epoch 1, climbing back at the
    # end; it was called under-trained, whose advice (more epochs, a higher rate) is the wrong way
    ([0.792368, 0.58331, 0.630115, 0.661057], 0.33, "unstable"),
    ([0.80, 0.93, 0.90, 0.91], 0.30, "unstable"),  # fell from its peak, rising again: not at its best
])
def test_a_run_is_diagnosed_from_its_own_dev_curve(curve, base, finding):
    from pairtune.report import diagnose

    got, sentence = diagnose([(10 * (i + 1), v) for i, v in enumerate(curve)], base, 0.005, "AUC")
    assert got == finding and sentence and "\n" not in sentence
    if finding == "over_fitted":
        assert "peaked at epoch 2 (dev AUC 0.930)" in sentence and "train.checkpoint: best" in sentence
    if finding == "under_trained":
        assert "0.860 → 0.920" in sentence and "train.epochs" in sentence
    if finding == "unstable":
        assert "peaked at epoch" in sentence and "lower learning rate" in sentence and "epochs" not in sentence
    if curve[0] == 0.792368:
        assert "peaked at epoch 1 (dev AUC 0.792), dropped to 0.583 and ended at 0.661" in sentence


def _with(inputs, **changes):
    import dataclasses

    return dataclasses.replace(inputs, **changes)


TRIALS = {"lr": 1e-3, "searched": 1, "metric": "auc", "run_steps": 40, "tie": 0.002,
          "trials": [{"rung": 0, "lr": lr, "steps": 5, "dev_auc": a, "dev_spearman": a / 2}
                     for lr, a in ((1e-4, 0.6), (1e-3, 0.8), (1e-2, 0.7))]
          + [{"rung": 1, "lr": lr, "steps": 10, "dev_auc": a, "dev_spearman": a / 2} for lr, a in ((1e-3, 0.9), (1e-2, 0.85))]}


def test_report_says_at_which_learning_rates_and_how_they_were_chosen(inputs):
    tune = {"full": {"lr": 1e-3, "searched": 0}, "lora": TRIALS}
    html, _ = build(_with(inputs, tune=tune))
    head = html.split('<p class="verdict">')[1].split("</p>")[0]
    assert "full fine-tuning at lr 0.001 (set in params.yaml, not searched)" in head
    assert "LoRA at lr 0.001 (chosen on dev among 3 rates)" in head
    assert "How each model was trained" in html and "Learning-rate search (tune stage)" in html
    assert "successive halving on dev AUC: 3 x 5 steps, then 2 x 10 steps (35 trial steps; the run itself is 40)" in html


def test_an_edge_note_pointing_up_is_qualified_when_the_run_at_that_rate_fell(inputs):
    """The search's note says a better rate may lie above its choice (the largest tried); when the whole run at
    that rate collapsed (LoRA+ on the harder demo) the report says to look below it instead."""
    edge = dict(TRIALS, lr=1e-2, note="chose the largest rate tried (0.01): a better rate may lie beyond it")
    fell = {m: {"train/loss": [(10, 0.5), (20, 0.3), (30, 0.3)], "dev/auc": [(10, 0.9), (20, 0.6), (30, 0.7)]}
            for m in ("full", "lora")}
    fell["full"]["dev/auc"] = [(10, 0.9), (20, 0.95), (30, 0.951)]
    train = {m: dict(inputs.train[m], lr=1e-2) for m in ("full", "lora")}
    html, _ = build(_with(inputs, tune={"full": dict(edge), "lora": dict(edge)}, curves=fell, train=train))
    assert html.count("a better rate may lie beyond it") == 2
    assert html.count("the whole run at this rate was unstable") == 1  # LoRA's, not full's (it levelled off)


def test_a_retried_run_is_told_where_the_rate_is(inputs):
    """#32: the search chose 0.01, the whole run there came apart on dev and was trained again at 0.005 (train.json's
    `retried`): the headline, the search table and the edge note say so; the cost table shows no retry columns."""
    edge = dict(TRIALS, lr=1e-2, note="chose the largest rate tried (0.01): a better rate may lie beyond it")
    retried = [{"lr": 1e-2, "dev_auc_first": 0.79, "dev_auc_end": 0.66}, {"lr": 5e-3, "dev_auc_first": 0.8,
                                                                          "dev_auc_end": 0.9}]
    train = {"full": inputs.train["full"],
             "lora": dict(inputs.train["lora"], lr=5e-3, searched_lr=1e-2, retried=retried)}
    html, _ = build(_with(inputs, tune={"full": {"lr": 1e-3, "searched": 0}, "lora": edge}, train=train))
    head = html.split('<p class="verdict">')[1].split("</p>")[0]
    assert ("LoRA at lr 0.005 (chosen on dev among 3 rates; its whole run at 0.01 came apart on dev: retrained "
            "lower, tune.retries)") in head
    # its curve (the fixture's, still rising) is under-trained: not told to raise the rate that came apart
    assert "more train.epochs should help (a higher rate, 0.01, came apart at full length)" in html
    assert "higher learning rate" not in html.split("a LoRA run that", 1)[1].split("Its figures", 1)[0]
    assert ("Checked at full length (tune.retries): lr 0.01 ended at dev AUC 0.660, its first epoch 0.790; lr 0.005 "
            "ended at dev AUC 0.900, its first epoch 0.800; kept lr 0.005, the run ending higher on dev") in html
    assert "yet the whole run at that rate came apart (below), so look below it instead" in html
    cost = html.split("<h2>Cost</h2>", 1)[1].split("</table>", 1)[0]
    assert "retried" not in cost and "searched_lr" not in cost


def test_report_warns_at_the_top_when_the_headline_rests_on_a_flagged_run(inputs):
    rising = {m: {"train/loss": [(10, 0.5), (20, 0.3)], "dev/auc": [(10, 0.7), (20, 0.9)]} for m in ("full", "lora")}
    rising["full"]["dev/auc"] = [(10, 0.9), (20, 0.901)]
    html, _ = build(_with(inputs, curves=rising))
    top = html.split("<h2>")[0]
    assert "rests on a LoRA run that was still improving at the last epoch" in top
    assert "full fine-tuning run" not in top  # its curve levelled off
    assert "<b>under trained</b>" in html and "<b>converged</b>" in html


def test_binary_headline_leads_with_auc_and_says_what_happened(inputs):
    html, comparison = build(inputs)  # the fixture's base is inverted, both tuned models are right way round
    head = html.split('<p class="verdict">')[1].split("</p>")[0]
    assert head.startswith("Fine-tuning fixed the ranking: eval AUC ") and "(base, inverted)" in head
    assert "LoRA minus full: AUC " in head
    # a base that was right way round: "improved", never "fixed"
    m = {n: dict(inputs.metrics[n], auc=v) for n, v in zip(inputs.models, (0.8, 0.9, 0.88), strict=True)}
    comp = dict(comparison, full_vs_base_auc_diff_ci_low=0.05, lora_vs_base_auc_diff_ci_low=0.03)
    from pairtune.report import verdict

    line = verdict(_with(inputs, metrics=m), comp)
    assert line.startswith("Fine-tuning improved the ranking: eval AUC 0.800 (base) → 0.900 (full) and 0.880 (LoRA)")
    # an interval that includes 0 for LoRA: it did not improve
    comp = dict(comp, lora_vs_base_auc_diff_ci_low=-0.01, lora_vs_base_auc_diff_ci_high=0.04)
    assert verdict(_with(inputs, metrics=m), comp).startswith(
        "Only full fine-tuning improved on the base; LoRA did not")


def test_graded_headline_leads_with_spearman(inputs):
    from pairtune.report import verdict

    graded = _with(inputs, data=dict(inputs.data, binary_labels=0), positive_threshold=0.6)
    m = {n: dict(inputs.metrics[n], spearman=s, auc=a) for n, s, a in
         zip(inputs.models, (0.82, 0.857, 0.848), (0.913, 0.941, 0.936), strict=True)}
    comp = {"full_vs_base_spearman_diff_ci_low": 0.02, "full_vs_base_spearman_diff_ci_high": 0.05,
            "lora_vs_base_spearman_diff_ci_low": 0.01, "lora_vs_base_spearman_diff_ci_high": 0.04,
            "lora_vs_full_spearman_diff": -0.009, "lora_vs_full_spearman_diff_ci_low": -0.02,
            "lora_vs_full_spearman_diff_ci_high": 0.002, "lora_share_of_full_gain_spearman": 0.77,
            "lora_share_of_full_gain_auc": 0.83}
    line = verdict(_with(graded, metrics=m), comp)
    assert line.startswith("Fine-tuning improved the ranking: eval Spearman 0.820 (base) → 0.857 (full) and 0.848 (LoRA).")
    assert "AUC at positive_threshold 0.6: 0.913 → 0.941 / 0.936." in line
    assert "the eval split cannot tell them apart; LoRA kept 77.0% of full fine-tuning's Spearman gain" in line
    assert "fixed" not in line and "83%" not in line


def test_binary_data_without_pair_types_gets_no_none_group():
    def no_type(p):
        p["pair_type"] = "none"  # what prepare files a pair without the field under

    html, _ = build(_make_inputs(no_type, names=("duplicate", "distinct")))
    assert ">none<" not in html and " none" not in html.split("<h2>Data</h2>")[0]
    assert "False positives by pair type" not in html and "<h3>by pair_type</h3>" not in html
    assert "No <code>pair_type</code> in the data: nothing is broken down by it." in html
    assert "<h3>by category</h3>" in html  # the field it has is still used
    summary = html.split("<ul>")[1].split("</ul>")[0]
    assert "distinct pairs pass as duplicate" in summary and "most often" not in summary
    assert "compatible" not in html  # the demo's words never reach another data set's report
    assert ">all pairs<" in html  # error tables: one group, named for what it is
    head = html.split('<p class="verdict">')[1].split("</p>")[0]
    assert "eval AUC" in head and "Spearman" not in head.split(".")[0]


def test_graded_data_with_categories_leads_with_spearman_and_its_words():
    def graded(p):
        p["label"] = 0.85 if p["label"] else 0.2  # a graded scale, positives at >= 0.6
        p["pair_type"] = "none"

    html, _ = build(_make_inputs(graded, positive_threshold=0.6, binary=0, names=("similar", "dissimilar")))
    head = html.split('<p class="verdict">')[1].split("</p>")[0]
    assert "eval Spearman" in head.split(".")[0] and "AUC at positive_threshold 0.6:" in head
    assert "<h3>by category</h3>" in html and ">none<" not in html
    assert "dissimilar pairs pass as similar" in html and "compatible" not in html


def test_a_difference_that_rounds_to_zero_has_no_minus_sign():
    from pairtune.report import _signed

    assert _signed(-0.00015) == "+0.000" and _signed(-0.0175) == "-0.018" and _signed(0.0024) == "+0.002"


def test_report_prose_says_what_numbers_mean(inputs):
    """#34: the # column numbers the eight metrics; a share only where it means something; never "-0"; MB
    in every size column; a threshold that calls everything positive is named, its F1 without an interval."""
    from pairtune.report import SHARE_METRICS, TABLE_METRICS, _fmt, trivial_threshold

    assert [g for _, _, g in TABLE_METRICS if g.isdigit()][:8] == ["1", "1", "2", "2", "2", "3", "3", "4"]
    assert {g for _, _, g in TABLE_METRICS} == {"1", "2", "3", "4", "5", "6", "7"}
    assert "mean_cos_neg" not in SHARE_METRICS and "threshold" not in SHARE_METRICS
    assert _fmt(-0.00001) == "-1.00e-05" and _fmt(-0.00004) != "-0" and _fmt(-1e-12) != "-0"
    assert _fmt(float(f"{-0.00004:.4g}")) == "-4.00e-05"
    m = dict(inputs.metrics["base"], recall=1.0, fp_count=inputs.metrics["base"]["n_pairs"]
             - inputs.metrics["base"]["n_positives"])
    assert trivial_threshold(m) and not trivial_threshold(dict(m, recall=0.9))
    html, _ = build(_with(inputs, metrics=dict(inputs.metrics, base=m)))
    assert "calls every pair compatible: the trivial rule" in html and "(MiB)" not in html and "artifact (MB)" in html
    row = html.split("Similarity margin (mean pos - mean neg)")[0].rsplit("<tr>", 1)[0]
    assert "Mean cosine, negatives" not in row
    neg_row = html.split("Mean cosine, negatives</td>")[1].split("</tr>")[0]
    assert neg_row.rstrip().endswith("<td></td>")  # no share for one class's mean cosine
    import re

    assert not re.search(r"\d\(all", html)  # "f1 0.9939(all figures": the template ate the space


def _operating(inputs, lora_forgets: float = 0.6, general: bool = True) -> dict:
    """Operating points built from the fixture's own eval scores; on 80 synthetic general pairs the base ranks
    well, full keeps most of it, LoRA's scores are mixed with noise (weight lora_forgets)."""
    rng = np.random.default_rng(0)
    g = rng.uniform(0, 5, 80)
    base = g + rng.normal(0, 1.0, 80)
    full = g + rng.normal(0, 1.2, 80)
    lora = (1 - lora_forgets) * g + lora_forgets * rng.normal(0, 5, 80)
    op = {}
    more = {m: g + rng.normal(0, 1.2 + 0.5 * k, 80) for k, m in enumerate(inputs.methods[2:])}
    for m, gs in (("full", full), ("lora", lora), *more.items()):
        op[m] = {"alpha": 0.7 if m == "full" else 0.6, "eval_scores": list(inputs.details[m]["scores"])}
        if general:
            op[m].update(general_scores=list(gs), general_base_scores=list(base), general_labels=list(g))
    return op


def test_the_verdict_weighs_both_axes_at_the_operating_points(inputs):
    """#32: each method at its chosen alpha, compared on eval quality and on general retention, each with a
    paired interval, and the trade-off said plainly; the figures are the scores' own, not copied."""
    from pairtune.metrics import retention_rows
    from pairtune.report import compare, verdict_axes

    op = _operating(inputs)
    it = {}
    for m in ("full", "lora"):
        r = float(retention_rows(*(np.array(op[m][k])[None] for k in ("general_base_scores", "general_scores",
                                                                         "general_labels")))[0])
        it[m] = dict(inputs.interpolate[m], retention=r, retention_ci_low=r - 0.05, retention_ci_high=r + 0.05)
    inp = _with(inputs, operating=op, interpolate=it)
    comp = compare(inp)
    assert comp["op_full_alpha"] == 0.7 and comp["op_lora_alpha"] == 0.6
    assert comp["op_full_retention"] == pytest.approx(it["full"]["retention"], abs=1e-6)
    assert comp["op_lora_retention"] < comp["op_full_retention"]
    d, lo, hi = (comp[f"op_lora_vs_full_retention_diff{s}"] for s in ("", "_ci_low", "_ci_high"))
    assert d == pytest.approx(comp["op_lora_retention"] - comp["op_full_retention"], abs=1e-5)
    assert lo <= d <= hi < 0  # LoRA forgot more, and 80 general pairs can tell
    assert comp["op_full_auc"] == pytest.approx(inputs.metrics["full"]["auc"], abs=1e-6)
    line = verdict_axes(inp, comp)
    assert "operating point" in line and "full lr 0.001, alpha 0.7; LoRA lr 0.001, alpha 0.6" in line
    # equal in-domain (the fixture's eval scores barely differ), full kept more: the sentence says both
    assert comp["op_lora_vs_full_auc_diff_ci_low"] < 0 < comp["op_lora_vs_full_auc_diff_ci_high"]
    assert (f"In short: equal in-domain; full fine-tuning keeps {it['full']['retention']:.2f} of the base's general "
            f"similarity, LoRA {it['lora']['retention']:.2f}.") in line
    # full also ahead in-domain by its interval: "better on both axes"
    ahead = dict(comp, op_lora_vs_full_auc_diff_ci_high=-0.001)
    assert (f"In short: full fine-tuning is better on both axes: in-domain, and it keeps "
            f"{it['full']['retention']:.2f} of the base's general similarity against "
            f"{it['lora']['retention']:.2f}.") in verdict_axes(inp, ahead)
    assert "one training run per method" in line and "one-axis" not in line
    html, _ = build(inp)
    assert line.replace("'", "&#39;") in html
    assert "These are the models as trained (alpha 1); the next line compares each method at its operating " \
           "point." in html
    # the same general scores for both methods: nothing to tell apart, and the sentence says so
    same = {m: dict(op[m], general_scores=op["full"]["general_scores"]) for m in op}
    comp = compare(_with(inp, operating=same))
    assert comp["op_lora_vs_full_retention_diff"] == 0
    assert "(the general set cannot tell them apart)" in verdict_axes(_with(inp, operating=same), comp)


def test_without_a_general_set_the_verdict_says_it_is_one_axis(inputs):
    from pairtune.report import compare, verdict_axes

    inp = _with(inputs, operating=_operating(inputs, general=False))
    comp = compare(inp)
    assert "op_lora_vs_full_auc_diff_ci_low" in comp and "op_lora_vs_full_retention_diff" not in comp
    line = verdict_axes(inp, comp)
    assert "The verdict is one-axis: there is no general set (general.path)" in line
    assert verdict_axes(inputs, compare(inputs)) == ""  # no operating points (an old run): no second line


def test_a_skipped_general_set_makes_the_verdict_one_axis_and_says_why(inputs):
    """A general set the base cannot rank is skipped by interpolate (general_skipped): the verdict names it."""
    from pairtune.report import compare, verdict_axes

    it = {m: {**inputs.interpolate[m], "general": 0, "general_skipped": "data/general/x.tsv: base Spearman -0.1"}
          for m in ("full", "lora")}
    inp = _with(inputs, operating=_operating(inputs, general=False), interpolate=it)
    line = verdict_axes(inp, compare(inp))
    assert "The verdict is one-axis: the general set was skipped (data/general/x.tsv: base Spearman -0.1)" in line


def _with_seeds(inputs, op: dict, spread: float) -> dict:
    """Two more training seeds per method: the operating point's scores moved by seeded noise of `spread`."""
    rng = np.random.default_rng(7)
    out = {}
    for m in inputs.methods:
        extra = []
        for seed in (43, 44):
            point = {"seed": seed, "eval_scores": list(np.array(op[m]["eval_scores"]) + rng.normal(0, spread, len(
                op[m]["eval_scores"])))}
            if "general_scores" in op[m]:
                point["general_scores"] = list(np.array(op[m]["general_scores"]) + rng.normal(0, 3 * spread, 80))
            extra.append(point)
        out[m] = {"n": 3, "seeds": [42, 43, 44], "extra": extra, "wall_s": 100.0}
    return out


def test_with_more_seeds_the_verdict_averages_them_and_says_so(inputs):
    """#32 point 4: seeds.n > 1 makes every operating-point figure a mean over seeds, its intervals wider than
    eval sampling alone where the seeds disagree; the report shows each seed's point. With one seed it says
    the intervals cover eval sampling only."""
    from pairtune.metrics import auc_rows
    from pairtune.report import compare, seed_rows, verdict_axes

    op = _operating(inputs)
    it = {m: dict(inputs.interpolate[m], retention=0.9, retention_ci_low=0.8, retention_ci_high=0.95) for m in op}
    inputs = _with(inputs, interpolate=it)
    one = compare(_with(inputs, operating=op))
    assert "op_seeds" not in one and "seeds.n 1" in verdict_axes(_with(inputs, operating=op), one)
    inp = _with(inputs, operating=op, seeds=_with_seeds(inputs, op, 0.3))
    comp = compare(inp)
    assert comp["op_seeds"] == 3
    y = np.array(inputs.details["base"]["labels"])[None]
    per_seed = [auc_rows(np.array(op["full"]["eval_scores"])[None], y)[0]] + [
        auc_rows(np.array(x["eval_scores"])[None], y)[0] for x in inp.seeds["full"]["extra"]]
    assert comp["op_full_auc"] == pytest.approx(np.mean(per_seed), abs=1e-6)
    assert comp["op_full_auc_ci_low"] < comp["op_full_auc"] < comp["op_full_auc_ci_high"]
    width = {k: c[f"op_lora_vs_full_{k}_diff_ci_high"] - c[f"op_lora_vs_full_{k}_diff_ci_low"]
             for k in ("auc", "retention") for c in (comp,)}
    width1 = {k: one[f"op_lora_vs_full_{k}_diff_ci_high"] - one[f"op_lora_vs_full_{k}_diff_ci_low"]
              for k in ("auc", "retention")}
    assert width["auc"] > width1["auc"] and width["retention"] > width1["retention"]
    line = verdict_axes(inp, comp)
    assert "Figures are means over 3 training seeds per method" in line and "seeds.n 1" not in line
    assert f"eval AUC {comp['op_full_auc']:.3f} [{comp['op_full_auc_ci_low']:.3f}, " in line
    assert f"{comp['op_full_retention']:.2f} [{comp['op_full_retention_ci_low']:.2f}, " in line
    rows = seed_rows(inp)
    assert [r["seed"] for r in rows] == ["42 (the pipeline's)", "43", "44"]
    assert rows[0]["cells"][0] == f"{per_seed[0]:.3f}" and rows[1]["cells"][0] == f"{per_seed[1]:.3f}"
    html, _ = build(inp)
    assert "<h3>Seed spread (seeds.n 3)</h3>" in html and "42 (the pipeline&#39;s)" in html
    # seeds for one method only (a half-finished run): no seed-aware figures rather than mismatched ones
    half = compare(_with(inp, seeds={"full": inp.seeds["full"]}))
    assert "op_seeds" not in half


def test_the_cost_table_writes_learning_rates_one_way(inputs):
    """A small rate came out as 2.00e-04 beside a larger one's 0.004: both as params.yaml writes them."""
    train = {m: dict(inputs.train[m], lr=lr) for m, lr in (("full", 2e-4), ("lora", 4e-3))}
    html, _ = build(_with(inputs, train=train))
    cost = html.split("<h2>Cost</h2>", 1)[1].split("</table>", 1)[0]
    assert "0.0002" in cost and "0.004" in cost and "e-04" not in cost


def test_the_report_scales_to_more_methods():
    """#36: methods are data. Four tuned methods get a column, a paired row against the base and against the
    reference (full), their share of full's gain, a point on every chart, and a verdict naming the best
    method on each axis and what the intervals can tell apart; the comparison keys follow one pattern."""
    from pairtune.report import _diff, _pair_compact, compare, verdict_axes

    methods = ("full", "lora", "dora", "ia3")
    inp = _make_inputs(methods=methods)
    op = _operating(inp)
    inp = _with(inp, operating=op, interpolate={m: dict(inp.interpolate[m], retention=0.9 - 0.1 * k,
                                                        retention_ci_low=0.85 - 0.1 * k, retention_ci_high=0.95 - 0.1 * k)
                                                for k, m in enumerate(methods)})
    comp = compare(inp)
    for m in ("lora", "dora", "ia3"):
        assert f"{m}_vs_base_auc_diff" in comp and f"{m}_vs_full_auc_diff_ci_low" in comp
        assert f"op_{m}_vs_full_retention_diff" in comp and f"op_{m}_auc" in comp
    assert "dora_vs_lora_auc_diff" not in comp  # against the reference only: no N^2 table
    html, _ = build(inp)
    assert "<h1>pairtune: base vs full fine-tuning vs LoRA vs dora vs ia3</h1>" in html
    header = html.split("<h2>Metrics</h2>", 1)[1].split("</tr>", 1)[0]
    assert "vs base</th>" not in header and "share of" not in header  # 4 + 3 more columns: in the paired table
    assert "<th>ia3</th>" in header
    first_row = html.split("<h2>Metrics</h2>", 1)[1].split("</tr>", 2)[1]
    assert first_row.count("<td>") == 2 + 5  # label, group, 5 models: the differences are in the paired table
    paired = html.split("<h3>Paired bootstrap", 1)[1].split("</table>", 1)[0]
    assert [r for r in ("full vs base", "ia3 vs base", "dora vs full", "ia3 vs full") if f"<td>{r}</td>" in paired] \
        == ["full vs base", "ia3 vs base", "dora vs full", "ia3 vs full"]
    assert "Each method minus full, AUC: LoRA " in html and "the eval split tells none of them apart" in html
    line = verdict_axes(inp, comp)
    assert "highest eval AUC: " in line and "most general retention: full fine-tuning (0.90)" in line
    assert "Against full fine-tuning: LoRA equal in-domain, " in line and "; ia3 " in line
    assert "full lr 0.001, alpha 0.7; LoRA lr 0.001, alpha 0.6; dora lr 0.001, alpha 0.6" in line
    two = build(_make_inputs())[0]
    assert html.count("<img ") == two.count("<img ")  # every chart still drawn, none dropped
    # the line's figures as a table under it, a row a method: read across, not out of a six-method sentence
    table = html.split('<p class="verdict">')[2].split("</table>", 1)[0]
    assert "<th>eval AUC</th><th>minus full</th><th>general retention</th>" in table
    rows = table.split("<tr>")[2:]
    assert [r.split("</td>")[0].split(">")[-1] for r in rows] == ["full fine-tuning", "LoRA", "dora", "ia3"]
    assert "<td>reference</td>" in rows[0] and f"{_diff(comp, 'op_ia3_vs_full_retention')}" in rows[3]
    assert _pair_compact(comp, "dora", "full", "auc", {"dora": 0.7, "full": 0.9}) in rows[2]
    assert "<th>general retention</th>" not in two.split("<h2>")[0]  # two methods: the line says it all


def test_the_report_of_one_method_compares_it_with_the_base_only():
    inp = _make_inputs(methods=("lora",))
    html, comp = build(inp)
    assert "lora_vs_base_auc_diff" in comp and not any("_vs_full" in k or "share_of" in k for k in comp)
    assert "<h1>pairtune: base vs LoRA</h1>" in html and " minus " not in html.split("</p>", 1)[0]


def test_the_report_shows_the_params_of_the_compared_methods_only():
    """params.yaml ships sections for methods not in train.methods: the report's params table leaves them out."""
    import report as report_stage  # stages/report.py

    raw = {"seed": 1, "generate": {"n_train": 1}, "train": {"epochs": 4, "methods": ["full", "lora"],
                                                           "full": {"method": "full"}, "lora": {"method": "lora"},
                                                           "dora": {"method": "lora"}},
           "tune": {"rungs": 1, "full": [1e-4], "lora": [1e-3], "dora": [1e-3]}}
    shown = report_stage._shown(raw, ("full", "lora"))
    assert "generate" not in shown and set(shown["train"]) == {"epochs", "methods", "full", "lora"}
    assert set(shown["tune"]) == {"rungs", "full", "lora"}
