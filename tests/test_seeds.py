"""Seed spread (#32 point 4): the extra training seeds, their seed-aware intervals, and the stage on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pairtune import metrics as M
from pairtune import seeds
from conftest import TINY_PARAMS, write_params


def test_extra_seeds_are_the_others():
    assert seeds.extra_seeds(42, 1) == []
    assert seeds.extra_seeds(42, 3) == [43, 44]


def _auc_stat(per_seed: list[np.ndarray], y: np.ndarray):
    return lambda k, i: M.auc_rows(per_seed[k][i], y[i])


def test_spread_is_the_seeds_mean_and_widens_when_seeds_disagree():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    clean = y + rng.normal(0, 0.8, 300)
    same = [clean, clean, clean]
    apart = [y + rng.normal(0, s, 300) for s in (0.4, 0.8, 1.6)]  # three seeds that land far apart
    mean, lo, hi = M.seed_spread(_auc_stat(apart, y), 3, 300, 400, 0.95, 1)
    assert mean == pytest.approx(np.mean([M.auc(s, y) for s in apart]))
    assert lo < mean < hi
    m1, lo1, hi1 = M.seed_spread(_auc_stat(same, y), 3, 300, 400, 0.95, 1)
    assert m1 == pytest.approx(M.auc(clean, y))
    # identical seeds: the pairs' interval alone, as the one-seed bootstrap gives it (to sampling error)
    blo, bhi = M.bootstrap_ci(lambda i: M.auc_rows(clean[i], y[i]), 300, 400, 0.95, 1)
    assert abs((hi1 - lo1) - (bhi - blo)) < 0.25 * (bhi - blo)
    assert hi - lo > 1.5 * (hi1 - lo1)  # seeds that disagree widen it
    # a figure undefined on every resample (one class) gives no interval, not an error
    mean, lo, hi = M.seed_spread(_auc_stat(same, np.ones(300, int)), 3, 300, 50, 0.95, 1)
    assert np.isnan(lo) and np.isnan(hi)


@pytest.fixture(scope="module")
def chosen(trained):
    """The interpolate stage's operating point of the tiny LoRA model."""
    import os

    import interpolate as interpolate_stage  # stages/interpolate.py

    old = os.getcwd()
    os.chdir(trained)  # general.path is relative to the project
    try:
        _interpolate(interpolate_stage, trained)
    finally:
        os.chdir(old)
    return json.loads((trained / "plots/seeds_interp/chosen.json").read_text())


def _interpolate(interpolate_stage, trained) -> None:
    interpolate_stage.main(["--base", str(trained / "models/base"), "--model", str(trained / "models/lora"),
                            "--data", str(trained / "data/prepared"), "--out", str(trained / "models/seeds_interp"),
                            "--metrics", str(trained / "metrics/seeds_interp.json"),
                            "--plots", str(trained / "plots/seeds_interp"), "--params", str(trained / "params.yaml")])


RETRIED_LR = TINY_PARAMS["train"]["lora"]["lr"] / 2


def _seeds_stage(trained, n: int, name: str) -> dict:
    import seeds as seeds_stage  # stages/seeds.py

    from ruamel.yaml import YAML

    params = YAML(typ="safe").load((trained / "params.yaml").read_text())  # base.model: the tiny model's folder
    params["seeds"]["n"] = n
    write_params(trained / f"{name}.yaml", params)
    # train's record, as after a retry (tune.retries): trained at half the rate the params name
    record = {**json.loads((trained / "dvclive/train_lora/train.json").read_text()), "lr": RETRIED_LR}
    trained_json = trained / "plots/seeds_trained.json"
    trained_json.write_text(json.dumps(record))
    seeds_stage.main(["--mode", "lora", "--data", str(trained / "data/prepared"), "--base", str(trained / "models/base"),
                      "--trained", str(trained_json), "--chosen", str(trained / "plots/seeds_interp/chosen.json"),
                      "--out", str(trained / f"plots/{name}"), "--params", str(trained / f"{name}.yaml")])
    return json.loads((trained / f"plots/{name}/points.json").read_text())


def test_the_stage_retrains_at_the_operating_point_and_n_1_trains_nothing(trained, chosen, monkeypatch):
    monkeypatch.chdir(trained)
    assert _seeds_stage(trained, 1, "seeds_one") == {"n": 1, "seeds": [TINY_PARAMS["seed"]], "extra": []}
    rec = _seeds_stage(trained, 2, "seeds_two")
    assert rec["n"] == 2 and rec["seeds"] == [TINY_PARAMS["seed"], TINY_PARAMS["seed"] + 1]
    assert rec["alpha"] == chosen["alpha"] and rec["lr"] == RETRIED_LR  # the rate train used, not the params'/search's
    (point,) = rec["extra"]
    assert point["seed"] == TINY_PARAMS["seed"] + 1
    assert len(point["eval_scores"]) == len(chosen["eval_scores"])
    assert len(point["general_scores"]) == len(chosen["general_scores"]) and "retention" in point
    assert point["eval_scores"] != chosen["eval_scores"]  # another seed trained another model


def test_a_replicate_at_the_pipelines_seed_is_the_pipelines_operating_point(trained, chosen, monkeypatch):
    """The stage's recipe is the train stage's: at the pipeline's own seed it rebuilds the same operating
    point, eval and general scores alike (so another seed's spread is the seed's, not a recipe's)."""
    from pairtune import params
    from pairtune.data import is_binary, read_pairs, read_prepared

    monkeypatch.chdir(trained)
    p = params.load(trained / "params.yaml")
    data = {s: read_prepared(trained / f"data/prepared/{s}.jsonl") for s in ("train", "dev", "eval")}
    out = seeds.replicate("lora", p, p.seed, p.train.method("lora").lr, chosen["alpha"], data,
                          is_binary(data["train"] + data["dev"]), str(trained / "models/base"),
                          read_pairs(p.general.path, p.general), np.array(chosen["general_base_scores"]))
    np.testing.assert_allclose(out["eval_scores"], chosen["eval_scores"], atol=1e-5)
    np.testing.assert_allclose(out["general_scores"], chosen["general_scores"], atol=1e-5)
