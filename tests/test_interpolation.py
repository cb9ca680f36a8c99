"""Base <-> tuned interpolation and the general-quality check, on the tiny model."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from pairtune import interpolation as I
from pairtune import models
from pairtune.params import Interpolate
from conftest import write_params


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


def _cfg(rule="retention", max_auc_drop=0.005, min_retention=0.9):
    return Interpolate(steps=4, rule=rule, max_auc_drop=max_auc_drop, min_retention=min_retention)


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


def _stage(trained, name: str, params: str = "params.yaml", data: str = "data/prepared"):
    import interpolate as interpolate_stage  # stages/interpolate.py

    interpolate_stage.main(["--base", str(trained / "models/base"), "--model", str(trained / "models/lora"),
                            "--data", str(trained / data), "--out", str(trained / f"models/{name}"),
                            "--metrics", str(trained / f"metrics/{name}.json"), "--plots", str(trained / f"plots/{name}"),
                            "--params", str(trained / params)])
    return json.loads((trained / f"metrics/{name}.json").read_text())


def test_stage_writes_retention_curve_and_model(trained, monkeypatch):
    monkeypatch.chdir(trained)
    m = _stage(trained, "interp_lora")
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
    flipped = trained / "data/flipped"
    shutil.copytree(trained / "data/prepared", flipped, dirs_exist_ok=True)
    rows = [json.loads(line) for line in (flipped / "eval.jsonl").read_text().splitlines()]
    (flipped / "eval.jsonl").write_text("".join(json.dumps(dict(r, label=1 - r["label"])) + "\n" for r in rows))
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
