"""dvc.yaml and params.yaml agree: each stage's script exists and is a dep, its params keys exist."""

from __future__ import annotations

import re

from ruamel.yaml import YAML

from conftest import ROOT

DVC = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
PARAMS = YAML(typ="safe").load((ROOT / "params.yaml").read_text())


def _expand(stage: dict) -> list[dict]:
    if "matrix" not in stage:
        return [stage]
    ((var, values),) = stage["matrix"].items()
    text = repr({k: v for k, v in stage.items() if k != "matrix"})
    return [eval(text.replace("${item.%s}" % var, str(v))) for v in values]  # noqa: S307 - our own repr


def test_every_stage_script_exists_and_is_a_dep():
    for name, stage in DVC["stages"].items():
        for s in _expand(stage):
            script = re.search(r"python (stages/\S+\.py)", s["cmd"]).group(1)
            assert (ROOT / script).exists(), f"{name}: {script} missing"
            assert script == f"stages/{name}.py", "one step = one script, same name"
            assert script in s["deps"], f"{name}: {script} not in deps"
            for dep in s["deps"]:
                if dep.startswith(("src/", "stages/")):
                    assert (ROOT / dep).exists(), f"{name}: dep {dep} missing"


def test_every_params_key_exists():
    for name, stage in DVC["stages"].items():
        for s in _expand(stage):
            for key in s.get("params", []):
                node = PARAMS
                for part in key.split("."):
                    assert part in node, f"{name}: param {key} not in params.yaml"
                    node = node[part]


def test_each_stage_has_its_own_params_section():
    for name in DVC["stages"]:
        if name not in ("report",):
            assert name in PARAMS or name in ("train", "evaluate"), name
    assert set(PARAMS) - {"seed", "data"} <= set(DVC["stages"])


def test_train_branches_list_only_their_own_mode_section():
    full, lora = _expand(DVC["stages"]["train"])
    assert "train.full" in full["params"] and "train.lora" not in full["params"]
    assert "train.lora" in lora["params"] and "train.full" not in lora["params"]
