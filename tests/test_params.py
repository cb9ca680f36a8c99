from __future__ import annotations

import copy

import pytest

from pairtune import params
from pairtune.errors import PairtuneError
from conftest import ROOT, TINY_PARAMS, write_params


def test_repo_params_load():
    p = params.load(ROOT / "params.yaml")
    assert p.train.lora.r == 8 and p.train.lora.target_modules == ("query", "value")
    assert p.train.full.lr == "auto" and p.train.lora.lr == "auto"  # chosen on dev by the tune stage
    assert 2e-5 in p.tune.full and 2e-4 in p.tune.lora  # the original recipe is one of the candidates
    with pytest.raises(Exception):
        p.seed = 1  # frozen


def test_every_value_has_a_comment():
    for n, line in enumerate((ROOT / "params.yaml").read_text().splitlines(), 1):
        if ":" in line and not line.rstrip().endswith(":") and line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"params.yaml:{n} has no trailing comment"


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda p: p.update(extra=1), "params.yaml: extra: unknown key"),
    (lambda p: p["train"].update(epoch=3), "train.epoch: unknown key"),
    (lambda p: p["train"]["lora"].pop("r"), "train.lora.r: missing key"),
    (lambda p: p.pop("evaluate"), "evaluate: missing key"),
    (lambda p: p["train"].update(epochs="4"), "train.epochs: expected int, got str '4'"),
    (lambda p: p["train"].update(epochs=True), "train.epochs: expected int, got bool"),
    (lambda p: p["train"]["full"].update(lr="fast"), "train.full.lr: expected a positive learning rate or auto, got 'fast'"),
    (lambda p: p["train"].update(loss="hinge"), "train.loss: 'hinge' is not one of"),
    (lambda p: p["train"]["lora"].update(target_modules="query"), "train.lora.target_modules: expected a non-empty list"),
    (lambda p: p.update(train=[1]), "train: expected a mapping"),
])
def test_bad_params_name_file_section_and_key(tmp_path, mutate, message):
    raw = copy.deepcopy(TINY_PARAMS)
    mutate(raw)
    path = write_params(tmp_path / "params.yaml", raw)
    with pytest.raises(PairtuneError) as err:
        params.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_int_accepted_for_float(tmp_path):
    raw = copy.deepcopy(TINY_PARAMS)
    raw["data"]["label_max"] = 5
    p = params.load(write_params(tmp_path / "params.yaml", raw))
    assert p.data.label_max == 5.0 and isinstance(p.data.label_max, float)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\ntrain: [unclosed\n")
    with pytest.raises(PairtuneError, match=r"params.yaml:\d+: invalid YAML"):
        params.load(bad)
    with pytest.raises(PairtuneError, match="file not found"):
        params.load(tmp_path / "nope.yaml")
