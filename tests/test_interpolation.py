"""Base <-> tuned interpolation and the general-quality check, on the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.torch import load_file

from pairtune import interpolation as I
from pairtune import models
from pairtune.params import Interpolate
from conftest import flip_eval_labels, write_params


def _embed(model, trained):
    return models.embed(model, json.loads((trained / "models/base/probe.json").read_text()))


@pytest.fixture(scope="module")
def pieces(trained):
    """Per mode: a fresh Interpolator, and the base and tuned embeddings of the probe texts."""
    base = models.load_model(trained / "models/base")
    out = {}
    for mode in ("full", "lora"):
        tuned = models.load_model(trained / f"models/{mode}")
        e_tuned = _embed(tuned, trained)
        out[mode] = (I.Interpolator.between(models.load_model(trained / "models/base"), tuned), e_tuned)
    return out, _embed(base, trained)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_alpha_0_and_1_give_base_and_tuned_exactly(pieces, trained, mode):
    by_mode, e_base = pieces
    interp, e_tuned = by_mode[mode]
    interp.set(0.0)
    assert np.array_equal(_embed(interp.model, trained), e_base)
    interp.set(1.0)
    assert np.array_equal(_embed(interp.model, trained), e_tuned)
    if mode == "lora":  # only the adapted matrices differ from the base
        assert interp.base and all(k.endswith(("query.weight", "value.weight")) for k in interp.base)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_alpha_is_linear_in_the_weights(pieces, mode):
    interp = pieces[0][mode][0]
    states = {}
    for a in (0.25, 0.5, 0.75):
        interp.set(a)
        states[a] = {k: interp.model[0].model.state_dict()[k].clone() for k in interp.base}
    for k, b in interp.base.items():
        t = interp.tuned[k]
        assert np.allclose(states[0.25][k], b + 0.25 * (t - b), atol=1e-6)
        assert np.allclose(states[0.5][k], (states[0.25][k] + states[0.75][k]) / 2, atol=1e-6)


def test_scaled_adapter_is_the_interpolated_model_and_passes_the_guard(pieces, trained, tmp_path):
    interp = pieces[0]["lora"][0]
    I.write_model(interp, 0.4, trained / "models/lora", tmp_path)
    src = load_file(str(trained / "models/lora" / models.ADAPTER_WEIGHTS))
    out = load_file(str(tmp_path / models.ADAPTER_WEIGHTS))
    for k, v in src.items():
        assert np.array_equal(out[k].numpy(), (v * 0.4 if "lora_B" in k else v).numpy())
    loaded = models.load_model(tmp_path)  # through the guard
    interp.set(0.4)
    assert np.max(np.abs(_embed(loaded, trained) - _embed(interp.model, trained))) < 1e-5
    manifest = models.read_manifest(tmp_path)
    assert manifest["mode"] == "lora" and manifest["interpolation"] == {"alpha": 0.4, "source": "lora"}


def _row(alpha, dev_auc, retention=None):
    r = {"alpha": alpha, "dev_auc": dev_auc, "dev_spearman": dev_auc}
    if retention is not None:
        r["retention"] = retention
    return r


def _cfg(rule="retention", max_auc_drop=0.005, min_retention=0.9, search="grid"):
    return Interpolate(steps=4, search=search, rule=rule, max_auc_drop=max_auc_drop, min_retention=min_retention,
                       grid_pairs=0)


def test_choice_rule():
    cfg = _cfg()
    rows = [_row(0, 0.2, 1.0), _row(0.25, 0.9, 0.99), _row(0.5, 0.95, 0.95), _row(0.75, 0.95, 0.93),
            _row(1.0, 0.97, 0.85)]
    assert I.choose(rows, cfg) == (0.5, True)  # best dev AUC keeping 0.9; tie at 0.95 goes to more retention
    assert I.choose(rows, _cfg(min_retention=0.999)) == (0.25, False)  # none keeps it: the one keeping most
    assert I.choose(rows, _cfg("auc_drop", 0.02)) == (0.5, True)  # within 0.02 of 0.97: most retention
    assert I.choose(rows, _cfg("auc_drop", 0.0)) == (1.0, True)  # no AUC to give: the best dev AUC
    off = [{k: v for k, v in r.items() if k != "retention"} for r in rows]
    assert I.choose(off, cfg) == (1.0, True)  # no general set: dev AUC alone
    tie = [_row(0, 0.5), _row(0.5, 1.0), _row(1.0, 1.0)]
    assert I.choose(tie, cfg) == (1.0, True)  # ... ties to the larger alpha (nearer the trained model)
    assert I.grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(I.PairtuneError, match="interpolate.steps"):
        I.grid(0)


def _stage(trained, name: str, params: str = "params.yaml", data: str = "data/prepared", *extra: str):
    import interpolate as interpolate_stage  # stages/interpolate.py

    interpolate_stage.main(["--base", str(trained / "models/base"), "--model", str(trained / "models/lora"),
                            "--data", str(trained / data), "--out", str(trained / f"models/{name}"),
                            "--metrics", str(trained / f"metrics/{name}.json"), "--plots", str(trained / f"plots/{name}"),
                            "--params", str(trained / params), *extra])
    return json.loads((trained / f"metrics/{name}.json").read_text())


def _params_file(trained, name: str, **interpolate) -> str:
    params = json.loads(json.dumps(__import__("conftest").TINY_PARAMS))
    params["base"]["model"] = "unused"
    params["interpolate"].update(interpolate)
    write_params(trained / name, params)
    return name


def test_descend_scores_from_alpha_1_down_and_stops_off_the_plateau():
    curve = {0.0: 0.3, 0.2: 0.6, 0.4: 0.9, 0.6: 0.96, 0.8: 0.97, 1.0: 0.968}
    scored: list[float] = []

    def score(a):
        scored.append(a)
        return {"alpha": a, "dev_auc": curve[a], "dev_spearman": curve[a], "retention": 1 - a}

    rows = I.walk(list(curve), score, 0.02)
    assert scored == [0.0, 1.0, 0.8, 0.6, 0.4]  # 0.4 is 0.07 under the best: 0.2 is not scored
    assert [r["alpha"] for r in rows] == [0.0, 0.4, 0.6, 0.8, 1.0]
    whole = [score(a) for a in curve]
    assert I.choose(rows, _cfg("auc_drop", 0.02)) == I.choose(whole, _cfg("auc_drop", 0.02)) == (0.6, True)
    scored.clear()
    assert len(I.walk(list(curve), score, None)) == 6 and scored == list(curve)  # grid: every point, in order
    scored.clear()
    curve.update({a: math.nan for a in curve})  # one class in dev: no AUC to stop on, so every point is scored
    assert len(I.walk(list(curve), score, 0.02)) == 6
    assert I.stop_below(_cfg("auc_drop", 0.02, search="descend")) == 0.02
    assert I.stop_below(_cfg("auc_drop", 0.02, search="grid")) is None
    assert I.stop_below(_cfg("retention", search="descend")) is None  # it may choose anywhere on the curve


def test_descend_and_evaluates_encodes_change_no_figure(trained, monkeypatch):
    """The default search with evaluate's encodes of alpha 0 (the base) and 1 (the tuned model) reused gives the
    whole grid's choice and figures byte for byte, embedding fewer texts; export then takes the chosen model's
    encode as its parity reference and writes what it writes when it encodes again."""
    import evaluate as evaluate_stage  # stages/evaluate.py
    import export as export_stage
    from test_export import _digests

    monkeypatch.chdir(trained)
    for m in ("base", "lora"):
        evaluate_stage.main(["--model", f"models/{m}", "--data", "data/prepared", "--metrics",
                             f"metrics/ev_{m}.json", "--plots", f"plots/ev_{m}"])
    grid = _params_file(trained, "grid.yaml", search="grid")
    encoded: list[str] = []
    real = models.embed
    monkeypatch.setattr(models, "embed", lambda m, t, bs=64, **kw: encoded.extend(t) or real(m, t, bs, **kw))
    whole = _stage(trained, "interp_grid", grid)
    n_grid = len(encoded)
    encoded.clear()
    fast = _stage(trained, "interp_fast", "params.yaml", "data/prepared", "--base-plots", "plots/ev_base",
                  "--model-plots", "plots/ev_lora")
    assert len(encoded) < n_grid
    assert fast.pop("grid_scored") <= whole.pop("grid_scored") == 5
    assert fast == whole
    fast_curve = json.loads((trained / "plots/interp_fast/curve.json").read_text())
    grid_curve = {r["alpha"]: r for r in json.loads((trained / "plots/interp_grid/curve.json").read_text())}
    assert [r == grid_curve[r["alpha"]] for r in fast_curve] == [True] * len(fast_curve)
    assert {0.0, 1.0, whole["alpha"]} <= {r["alpha"] for r in fast_curve}
    for name in ("chosen.json", "embeddings.npy"):
        assert (trained / f"plots/interp_fast/{name}").read_bytes() == (trained / f"plots/interp_grid/{name}").read_bytes()
    assert _digests(trained / "models/interp_fast") == _digests(trained / "models/interp_grid")

    def export(tag: str, *plots: str) -> str:
        export_stage.main(["--chosen", "models/interp_fast", "--chosen-metrics", "metrics/interp_fast.json",
                           "--tuned", "models/lora", "--tuned-evaluate", "plots/ev_lora/details.json",
                           "--data", "data/prepared", "--out", f"models/exp_{tag}", "--metrics",
                           f"metrics/exp_{tag}.json", *plots])
        return (trained / f"metrics/exp_{tag}.json").read_text()

    encoded.clear()
    reused = export("reused", "--chosen-plots", "plots/interp_fast")
    n_reused = len(encoded)
    encoded.clear()
    assert reused == export("encoded") and n_reused < len(encoded)
    assert _digests(trained / "models/exp_reused") == _digests(trained / "models/exp_encoded")


def test_stage_writes_retention_curve_and_model(trained, monkeypatch):
    monkeypatch.chdir(trained)
    m = _stage(trained, "interp_lora", _params_file(trained, "grid_lora.yaml", search="grid"))
    curve = json.loads((trained / "plots/interp_lora/curve.json").read_text())
    assert [r["alpha"] for r in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve[0]["retention"] == 1.0 and {"dev_auc", "general_spearman", "general_auc"} <= set(curve[0])
    assert m["general"] == 1 and m["alpha"] in [r["alpha"] for r in curve[1:]]
    assert m["retention_tuned"] == pytest.approx(curve[-1]["retention"], abs=1e-6)
    assert m["retention_tuned_ci_low"] <= m["retention_tuned"] <= m["retention_tuned_ci_high"]
    for key in ("eval_auc", "eval_spearman", "dev_auc", "retention", "retention_met"):
        assert key in m and math.isfinite(m[key])
    models.load_model(trained / "models/interp_lora")


def test_alpha_is_chosen_without_looking_at_eval(trained, monkeypatch, tmp_path):
    """Flip every eval label: the curve and the chosen alpha stay, only the eval figures change."""
    monkeypatch.chdir(trained)
    flip_eval_labels(trained / "data/prepared", trained / "data/flipped")
    a = _stage(trained, "interp_a")
    b = _stage(trained, "interp_b", data="data/flipped")
    assert (trained / "plots/interp_a/curve.json").read_bytes() == (trained / "plots/interp_b/curve.json").read_bytes()
    assert a["alpha"] == b["alpha"] and a["eval_auc"] == pytest.approx(1 - b["eval_auc"], abs=1e-6)


def test_general_off_and_bad_general_file(trained, monkeypatch, capsys):
    from pairtune.errors import run_stage

    monkeypatch.chdir(trained)
    params = json.loads(json.dumps(__import__("conftest").TINY_PARAMS))
    params["base"]["model"] = "unused"
    params["general"]["path"] = ""
    write_params(trained / "off.yaml", params)
    m = _stage(trained, "interp_off", params="off.yaml")
    assert m["general"] == 0 and "retention" not in m and "alpha" in m
    assert "retention" not in json.loads((trained / "plots/interp_off/curve.json").read_text())[0]

    bad = trained / "data/general/bad.tsv"
    bad.write_text("sentence1\tsentence2\tscore\na\tb\t4\nc\td\tsix\n")
    params["general"]["path"] = str(bad)
    write_params(trained / "bad.yaml", params)
    with pytest.raises(SystemExit) as exc:
        run_stage(lambda: _stage(trained, "interp_bad", params="bad.yaml"))
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {bad}:3: label 'six' is not a number"
    assert not (trained / "models/interp_bad").exists() and not (trained / "metrics/interp_bad.json").exists()


def test_no_text_is_embedded_twice_at_one_alpha(pieces, trained, monkeypatch):
    """A second sweep sharing the cache encodes only the texts the first did not embed at its alphas."""
    interp = pieces[0]["lora"][0]
    texts = json.loads((trained / "models/base/probe.json").read_text())
    first = I.Split([{"text_1": a, "text_2": b, "label": 1.0} for a, b in zip(texts[:8:2], texts[1:8:2])], 0.5)
    whole = I.Split(first.pairs + [{"text_1": a, "text_2": b, "label": 0.0}
                                   for a, b in zip(texts[8:16:2], texts[9:16:2])], 0.5)
    encoded: list[str] = []
    real = models.embed
    monkeypatch.setattr(models, "embed", lambda m, t, bs=64: encoded.extend(t) or real(m, t, bs))
    cache: I.Cache = {}
    _, s_first = I.sweep(interp, [0.0, 0.5, 1.0], {"g": first}, 4, cache)
    assert len(encoded) == 3 * 8
    _, s_whole = I.sweep(interp, [0.0, 1.0], {"g": whole}, 4, cache)
    assert len(encoded) == 3 * 8 + 2 * 8  # only the 8 new texts, at each of the two alphas
    for a in (0.0, 1.0):  # cached and fresh rows are the same embeddings
        assert np.array_equal(s_whole[a]["g"][:4], s_first[a]["g"])


def test_grid_on_a_sample_reports_the_whole_general_set(trained, monkeypatch):
    """grid_pairs below the set's size: the curve is on the sample, alpha 0/1/chosen on every pair."""
    monkeypatch.chdir(trained)
    params = json.loads(json.dumps(__import__("conftest").TINY_PARAMS))
    params["base"]["model"] = "unused"
    write_params(trained / "all.yaml", params)
    params["interpolate"]["grid_pairs"] = 12
    write_params(trained / "sampled.yaml", params)
    whole = _stage(trained, "interp_all", params="all.yaml")
    part = _stage(trained, "interp_part", params="sampled.yaml")
    assert (part["general_grid_pairs"], part["general_pairs"]) == (12, whole["general_pairs"])
    assert whole["general_grid_pairs"] == whole["general_pairs"] > 12
    # Equal exactly: a text's embedding does not depend on the batch it was encoded in (models.embed), so the
    # cached sample's rows are the whole set's (on the AVX2-capped kernels too; with padded batches this failed
    # there by 0.002: one swap of near-tied cosines moves a 30-pair Spearman by 4e-4). The sample's own
    # figure is far off.
    sample_base = json.loads((trained / "plots/interp_part/curve.json").read_text())[0]["general_spearman"]
    assert abs(sample_base - whole["general_spearman_base"]) > 0.01
    for key in ("general_spearman_base", "general_spearman_tuned", "retention_tuned", "retention_tuned_ci_low",
                "general_auc_base", "general_auc_tuned"):
        assert part[key] == whole[key], key
    assert I.sample(list(range(30)), 12, 42) == I.sample(list(range(30)), 12, 42) != list(range(12))


def test_a_general_set_the_base_cannot_rank_costs_retention_not_the_run(trained, monkeypatch):
    """The general set scored backwards (the base's Spearman on it < 0): retention is undefined, so the stage
    chooses alpha on dev alone, as with the check off, and says why, instead of stopping the pipeline."""
    monkeypatch.chdir(trained)
    params = json.loads(json.dumps(__import__("conftest").TINY_PARAMS))
    params["base"]["model"] = "unused"
    src = trained / params["general"]["path"]
    backwards = trained / "data/general/backwards.tsv"
    lines = src.read_text().splitlines()
    backwards.write_text("\n".join([lines[0]] + [f"{a}\t{b}\t{5.0 - float(s)}" for a, b, s in
                                                 (line.split("\t") for line in lines[1:])]) + "\n")
    params["general"]["path"] = str(backwards)
    write_params(trained / "backwards.yaml", params)
    m = _stage(trained, "interp_backwards", params="backwards.yaml")
    assert m["general"] == 0 and "retention" not in m
    assert m["general_skipped"].startswith(f"{backwards}: the base model's Spearman on the general set is -")
    params["general"]["path"] = ""
    write_params(trained / "off2.yaml", params)
    assert m["alpha"] == _stage(trained, "interp_off2", params="off2.yaml")["alpha"]
    models.load_model(trained / "models/interp_backwards")


@pytest.mark.parametrize("kind", ["dora", "ia3"])
def test_each_adapter_kind_writes_its_operating_point_exactly(more_kinds, trained, tmp_path, kind):
    """#36: IA3's operating point stays an adapter (each vector 1 + alpha (l - 1)); DoRA's is written as merged
    weights (a scaled DoRA adapter is not the blend). Either way it is the interpolated model, through the guard."""
    source = more_kinds[kind][0]
    interp = I.Interpolator.between(models.load_model(trained / "models/base"), models.load_model(source))
    I.write_model(interp, 0.4, source, tmp_path)
    manifest = models.read_manifest(tmp_path)
    if kind == "ia3":
        assert manifest["mode"] == "ia3" and I.adapter_scaling(source) == "ia3"
        src, out = (load_file(str(f / models.ADAPTER_WEIGHTS)) for f in (source, tmp_path))
        for k, v in src.items():
            assert np.allclose(out[k].numpy(), 1 + 0.4 * (v.numpy() - 1), atol=1e-7)
    else:
        assert I.adapter_scaling(source) is None and manifest["mode"] == "full"
        assert manifest["merged_from"] == "lora (DoRA)" and not (tmp_path / models.ADAPTER_WEIGHTS).exists()
    loaded = models.load_model(tmp_path)
    interp.set(0.4)
    assert np.max(np.abs(_embed(loaded, trained) - _embed(interp.model, trained))) < 1e-5
