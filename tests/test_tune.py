"""The learning-rate search: its plan, its choice and tie rule, the stage on the tiny model, and bad params."""

from __future__ import annotations

import json
import math

import pytest

from pairtune import params, tune
from pairtune.errors import PairtuneError
from conftest import TINY_PARAMS, flip_eval_labels, write_params


def test_rung_plan_halves_candidates_doubles_steps_within_the_budget():
    assert tune.rung_plan(4, 2, 1.0, 372) == [(4, 46), (2, 92)]  # 4*46 + 2*92 = 368 <= 372
    assert tune.rung_plan(4, 1, 1.0, 372) == [(4, 93)]
    assert tune.rung_plan(5, 3, 1.0, 400) == [(5, 21), (3, 42), (2, 84)]  # 5*21 + 3*42 + 2*84 = 399
    assert tune.rung_plan(2, 5, 1.0, 400) == [(2, 200)]  # a rung that would keep one candidate is not run
    for n, rungs, budget, total in ((4, 2, 1.0, 372), (5, 3, 0.5, 1000), (7, 3, 2.0, 500)):
        plan = tune.rung_plan(n, rungs, budget, total)
        assert sum(c * s for c, s in plan) <= budget * total


def test_a_budget_too_small_for_a_real_trial_is_one_line():
    with pytest.raises(PairtuneError, match=r"^params.yaml: tune.budget: 0.1 of a 100-step run gives rung-0 trials of 1 steps"):
        tune.rung_plan(4, 2, 0.1, 100)


def test_rank_ties_go_to_more_retention_then_the_smaller_learning_rate():
    assert tune.rank({1e-3: 0.90, 2e-3: 0.95, 5e-4: 0.80}, 0.002) == [2e-3, 1e-3, 5e-4]
    assert tune.rank({1e-3: 0.949, 2e-3: 0.95, 5e-4: 0.80}, 0.002) == [1e-3, 2e-3, 5e-4]  # within the tie
    assert tune.rank({1e-3: float("nan"), 2e-3: 0.5}, 0.0)[0] == 2e-3  # a NaN metric never wins
    scores = {1e-3: 0.949, 2e-3: 0.95, 5e-4: 0.80}
    # within the tie, the trial that kept more of the base's general similarity first, whatever its rate
    assert tune.rank(scores, 0.002, {1e-3: 0.6, 2e-3: 0.8, 5e-4: 0.99}) == [2e-3, 1e-3, 5e-4]
    assert tune.rank(scores, 0.002, {1e-3: 0.8, 2e-3: 0.6, 5e-4: 0.99}) == [1e-3, 2e-3, 5e-4]
    # outside the tie retention does not count: 5e-4 kept the most but lost on dev
    assert tune.rank(scores, 0.002, {1e-3: 0.8, 2e-3: 0.8, 5e-4: 0.99})[-1] == 5e-4
    assert tune.rank(scores, 0.002, {1e-3: 0.8, 2e-3: 0.8}) == [1e-3, 2e-3, 5e-4]  # equal retention: smaller lr
    assert tune.rank(scores, 0.002, {1e-3: float("nan"), 2e-3: 0.1}) == [2e-3, 1e-3, 5e-4]  # NaN retention last


def test_beyond_is_one_outer_grid_step_past_an_edge():
    assert tune.beyond(1e-4, [2e-5, 5e-5, 1e-4]) == 2e-4
    assert tune.beyond(2e-5, [2e-5, 5e-5, 1e-4]) == 8e-6
    assert tune.beyond(2e-3, [5e-4, 1e-3, 2e-3]) == 4e-3
    assert tune.beyond(4e-3, [5e-4, 1e-3, 2e-3, 4e-3]) == 8e-3
    assert tune.beyond(1e-3, [5e-4, 1e-3, 2e-3]) is None  # inside
    assert tune.beyond(1e-3, [1e-3]) is None  # one rate: no step to take


def test_search_keeps_the_better_half_and_chooses_the_clear_best():
    """A constructed case: dev AUC peaks at 1e-3, whatever the trial length."""
    calls = []

    def trial(lr: float, steps: int) -> dict[str, float]:
        calls.append((lr, steps))
        score = 0.99 - abs(lr - 1e-3) * 100 - 0.01 * (steps < 90)
        return {"dev_auc": score, "dev_spearman": score / 2}

    lr, rows, added = tune.search((2e-4, 5e-4, 1e-3, 2e-3), [(4, 46), (2, 92)], 0.002, "auc", trial, extend=2)
    assert lr == 1e-3 and added == []  # the best was inside the grid: nothing tried past it
    assert calls == [(2e-4, 46), (5e-4, 46), (1e-3, 46), (2e-3, 46), (1e-3, 92), (5e-4, 92)]
    assert [r["rung"] for r in rows] == [0, 0, 0, 0, 1, 1] and all("wall_s" in r for r in rows)


def _rising(peak: float):
    """A constructed dev curve rising with the rate up to `peak`, then falling."""
    def trial(lr: float, steps: int) -> dict[str, float]:
        score = 0.99 - abs(math.log(lr / peak))
        return {"dev_auc": score, "dev_spearman": score}
    return trial


@pytest.mark.parametrize("peak, extend, chosen, added", [
    (4e-3, 1, 4e-3, [4e-3]),              # one step past the largest rate finds the peak
    (1.6e-2, 1, 4e-3, [4e-3]),            # still rising: the bound stops it (and the note says so)
    (1.6e-2, 3, 1.6e-2, [4e-3, 8e-3, 1.6e-2]),
    (2.5e-3, 2, 2e-3, [4e-3]),            # past the edge was worse: the edge stands, looked past once
    (2e-4, 1, 2.5e-4, [2.5e-4]),          # the smallest rate: one step down (still the edge: noted)
    (4e-3, 0, 2e-3, []),                  # extend 0: the grid alone
])
def test_a_best_at_the_grid_edge_is_looked_past(peak, extend, chosen, added):
    grid = (5e-4, 1e-3, 2e-3)
    lr, rows, got = tune.search(grid, [(3, 40)], 0.002, "auc", _rising(peak), extend=extend)
    assert (lr, got) == (pytest.approx(chosen), pytest.approx(added))
    assert [r["lr"] for r in rows if r["extended"]] == got and all(r["steps"] == 40 for r in rows)
    note = tune.edge_note("lora", lr, sorted(r["lr"] for r in rows), got)
    # no choice at an edge goes un-noted unless the search looked past it
    assert (note is None) == (min(r["lr"] for r in rows) < lr < max(r["lr"] for r in rows))


def test_chosen_lr_a_number_or_the_search_result():
    from pairtune.training import chosen_lr

    assert chosen_lr("full", 2e-5, None) == 2e-5
    assert chosen_lr("full", 2e-5, {"lr": 1e-3, "searched": 1}) == 2e-5  # a number wins
    assert chosen_lr("lora", "auto", {"lr": 1e-3, "searched": 1}) == 1e-3
    with pytest.raises(PairtuneError, match=r"train.lora.lr: auto, but no search result .* dvc repro tune@lora"):
        chosen_lr("lora", "auto", {"lr": 2e-4, "searched": 0})


@pytest.mark.parametrize("key, value, message", [
    (("train", "full", "lr"), "fast", "train.full.lr: expected a positive learning rate or auto, got 'fast'"),
    (("train", "lora", "lr"), -1e-4, "train.lora.lr: expected a positive learning rate or auto, got -0.0001"),
    (("tune", "lora"), [], "tune.lora: expected a non-empty list of distinct positive numbers, got []"),
    (("tune", "full"), [1e-5, 1e-5], "tune.full: expected a non-empty list of distinct positive numbers"),
    (("tune", "full"), [1e-5, "2e-5"], "tune.full: expected a non-empty list of distinct positive numbers"),
    (("tune", "metric"), "f1", "tune.metric: 'f1' is not one of auto, auc, spearman"),
    (("tune", "rungs"), 0, "tune.rungs: 0 is outside [1, 10]"),
    (("tune", "tie"), 2.0, "tune.tie: 2.0 is outside [0, 1]"),
    (("tune", "extend"), 11, "tune.extend: 11 is outside [0, 10]"),
    (("tune", "retries"), -1, "tune.retries: -1 is outside [0, 10]"),
    (("tune", "retry_factor"), 1.0, "tune.retry_factor: 1.0 is outside [0.01, 0.99]"),
])
def test_bad_search_params_are_one_line(key, value, message):
    raw = json.loads(json.dumps(TINY_PARAMS))
    node = raw
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    with pytest.raises(PairtuneError) as err:
        params.from_dict(raw)
    assert str(err.value).startswith(f"params.yaml: {message}") and "\n" not in str(err.value)


def _tune_stage(root, mode: str, name: str, params_file: str, data: str = "data/prepared") -> dict:
    import tune as tune_stage  # stages/tune.py

    tune_stage.main(["--mode", mode, "--data", str(root / data), "--base", str(root / "models/base"),
                     "--out", str(root / f"plots/{name}"), "--metrics", str(root / f"metrics/{name}.json"),
                     "--params", str(root / params_file)])
    return json.loads((root / f"plots/{name}/trials.json").read_text())


@pytest.fixture(scope="module")
def auto_params(trained):
    from ruamel.yaml import YAML

    raw = YAML(typ="safe").load((trained / "params.yaml").read_text())  # base.model: the tiny model's folder
    raw["train"]["lora"]["lr"] = "auto"
    write_params(trained / "auto.yaml", raw)
    return "auto.yaml"


def test_the_stage_searches_on_dev_and_train_uses_its_choice(trained, auto_params, monkeypatch):
    monkeypatch.chdir(trained)
    record = _tune_stage(trained, "lora", "tune/lora", auto_params)
    grid = TINY_PARAMS["tune"]["lora"]
    assert record["searched"] == 1 and record["metric"] == "auc" and record["lr"] in grid + record["extended"]
    assert record["grid"] == grid and len(record["extended"]) <= TINY_PARAMS["tune"]["extend"]
    assert {t["lr"] for t in record["trials"] if t["rung"] == 0} == set(grid + record["extended"])
    cost = json.loads((trained / "metrics/tune/lora.json").read_text())["lora"]
    assert cost["lr"] == record["lr"] and cost["trials"] == len(record["trials"]) and cost["search_s"] > 0
    assert json.loads((trained / "plots/tune/lora/choice.json").read_text()) == {"lr": record["lr"], "searched": 1}
    rung0 = record["trials"][0]["steps"]
    assert cost["trial_steps_share"] <= (TINY_PARAMS["tune"]["budget"] * record["run_steps"]
                                         + rung0 * len(record["extended"])) / record["run_steps"] + 1e-4
    # every trial measured its retention on the general set, and ties went by it
    assert record["tie_break"] == "retention" and all(0 < abs(t["retention"]) < 5 for t in record["trials"])
    last = [t for t in record["trials"] if t["rung"] == record["trials"][-1]["rung"]]
    assert record["lr"] == tune.rank({t["lr"]: t["dev_auc"] for t in last}, record["tie"],
                                     {t["lr"]: t["retention"] for t in last})[0]

    import train as train_stage  # stages/train.py

    train_stage.main(["--mode", "lora", "--data", "data/prepared", "--base", "models/base", "--out", "models/lora_auto",
                      "--metrics", "metrics/train_lora_auto.json", "--live", "dvclive/train_lora_auto",
                      "--tune", "plots/tune/lora/choice.json", "--params", auto_params])
    assert json.loads((trained / "dvclive/train_lora_auto/train.json").read_text())["lr"] == record["lr"]


def test_flipping_every_eval_label_changes_nothing_in_the_search(trained, auto_params, monkeypatch):
    monkeypatch.chdir(trained)
    flip_eval_labels(trained / "data/prepared", trained / "data/flipped_tune")
    a = _tune_stage(trained, "lora", "tune_a", auto_params)
    b = _tune_stage(trained, "lora", "tune_b", auto_params, data="data/flipped_tune")
    assert a == b


def test_a_fixed_learning_rate_runs_no_search(trained, monkeypatch):
    monkeypatch.chdir(trained)
    raw = json.loads(json.dumps(TINY_PARAMS))
    raw["base"]["model"] = "unused"
    write_params(trained / "fixed.yaml", raw)

    def no_trials(*args, **kwargs):
        raise AssertionError("a trial ran")

    monkeypatch.setattr(tune, "trials", no_trials)
    record = _tune_stage(trained, "full", "tune_fixed", "fixed.yaml")
    assert record == {"lr": TINY_PARAMS["train"]["full"]["lr"], "searched": 0}
    assert json.loads((trained / "plots/tune_fixed/choice.json").read_text()) == record


def test_a_choice_still_at_the_edge_is_noted():
    tried = [2e-4, 5e-4, 1e-3, 2e-3]
    assert tune.edge_note("lora", 1e-3, tried, []) is None
    assert tune.edge_note("lora", 2e-3, tried, []).startswith("chose the largest rate tried (0.002): a better rate "
                                                              "may lie beyond it; raise tune.extend")
    assert "smallest rate tried (0.0002)" in tune.edge_note("lora", 2e-4, tried, [])
    assert "(0.004, 1 past the grid (tune.extend))" in tune.edge_note("lora", 4e-3, [*tried, 4e-3], [4e-3])


@pytest.mark.parametrize("curve, margin, apart", [
    ([0.70, 0.80, 0.85, 0.86], 0.002, False),  # a run that learns
    ([0.95, 0.97, 0.968], 0.002, False),  # fell from its peak, still above its first epoch: over-fitted, not apart
    ([0.790, 0.789], 0.002, False),  # within the margin of its first epoch: noise
    ([0.79, 0.58, 0.63, 0.66], 0.002, True),  # LoRA+ on the harder demo (bench/methods.json)
    ([0.80], 0.002, False),  # one epoch: nothing to compare
    ([], 0.002, False),
])
def test_a_run_came_apart_when_it_ends_below_its_first_epoch(curve, margin, apart):
    from pairtune.training import came_apart

    assert came_apart(curve, margin) is apart


def _checked(trained, tmp_path, name, lr, **tune_keys):
    """train_checked on the tiny model: LoRA for two epochs (a first and a last dev figure each run)."""
    from dataclasses import replace

    from pairtune.data import read_prepared
    from pairtune.training import train_checked

    p = params.load(trained / "params.yaml")
    p = replace(p, train=replace(p.train, epochs=2), tune=replace(p.tune, **tune_keys))
    out, live = tmp_path / name, tmp_path / f"{name}_live"
    out.mkdir()
    data = [read_prepared(trained / f"data/prepared/{s}.jsonl") for s in ("train", "dev")]
    return p, out, live, train_checked("lora", p, *data, True, str(trained / "models/base"), out, str(live), lr, "auc")


def test_a_searched_rate_whose_run_came_apart_is_trained_again_lower_and_the_better_run_kept(trained, tmp_path):
    """#32: the whole run at the search's choice is checked on dev. A margin of -1 makes every run 'come apart' (AUCs
    differ by less than 1), so this drives the retries through real training; which run is kept is dev's call."""
    import numpy as np

    from pairtune import models
    from pairtune.data import read_prepared
    from pairtune.training import train_mode

    p, out, live, m = _checked(trained, tmp_path, "apart", 1e-2, tie=-1.0, retries=2, retry_factor=0.5)
    assert [r["lr"] for r in m["retried"]] == [1e-2, 5e-3, 2.5e-3] and m["searched_lr"] == 1e-2
    ends = [r["dev_auc_end"] for r in m["retried"]]
    kept = max(range(3), key=lambda i: (ends[i], i))
    assert m["lr"] == m["retried"][kept]["lr"] and m["dev"][-1]["auc"] == ends[kept]
    assert m["train_wall_s"] > 0 and len(m["dev"]) == 2
    models.load_model(out)  # the kept run's folder, whole, through the guard
    # the same bytes a plain run at the kept rate writes, and its curves beside them
    again = tmp_path / "again"
    again.mkdir()
    data = [read_prepared(trained / f"data/prepared/{s}.jsonl") for s in ("train", "dev")]
    train_mode("lora", p, *data, True, str(trained / "models/base"), again, None, m["lr"])
    np.testing.assert_array_equal(np.load(out / "probe.npy"), np.load(again / "probe.npy"))
    rows = (live / "plots/metrics/dev/auc.tsv").read_text().splitlines()
    assert len(rows) == 3 and float(rows[-1].split("\t")[-1]) == pytest.approx(ends[kept], abs=1e-6)
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".retry-")]  # no scratch left behind


def test_a_run_that_did_not_come_apart_is_trained_once(trained, tmp_path):
    _, out, _, m = _checked(trained, tmp_path, "whole", 1e-2, tie=1.0)  # margin 1: no run can come apart
    assert "retried" not in m and "searched_lr" not in m and m["lr"] == 1e-2
    _, _, _, off = _checked(trained, tmp_path, "off", 1e-2, tie=-1.0, retries=0)  # retries 0: never again
    assert "retried" not in off
