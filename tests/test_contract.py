"""dvc.yaml and params.yaml agree: each stage's script exists and is a dep, its params keys exist."""

from __future__ import annotations

import re

from ruamel.yaml import YAML

from conftest import ROOT

DVC = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
PARAMS = YAML(typ="safe").load((ROOT / "params.yaml").read_text())


def _resolve(values):
    """A matrix's values: a list, or a ${...} reference into params.yaml (train.methods)."""
    if isinstance(values, str) and values.startswith("${"):
        node = PARAMS
        for part in values[2:-1].split("."):
            node = node[part]
        return node
    return values


def _expand(stage: dict) -> list[dict]:
    if "matrix" not in stage:
        return [stage]
    ((var, values),) = stage["matrix"].items()
    values = _resolve(values)
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
    # besides the shared seed, only input descriptions (the pair files, the general-domain file) are not stages
    assert set(PARAMS) - {"seed", "data", "general"} <= set(DVC["stages"])


def test_adding_a_method_reruns_only_its_own_stages_and_the_report():
    """#36: every per-method stage is a matrix over train.methods and depends on its own method's sections
    only, never on train or tune whole or on the methods list: a method added there reruns nothing else."""
    every_method = [name for name, stage in DVC["stages"].items() if "matrix" in stage]
    assert set(every_method) == {"tune", "train", "evaluate", "interpolate", "export", "seeds"}
    for name in every_method:
        assert DVC["stages"][name]["matrix"] in ({"mode": "${train.methods}"}, {"model": "${train.methods}"}), name
        for s in _expand(DVC["stages"][name]):
            for key in s.get("params", []):
                assert key not in ("train", "tune", "train.methods"), f"{name}: depends on {key}"
                if key.startswith(("train.", "tune.")) and key.split(".")[1] in PARAMS["train"]["methods"] + [
                        k for k, v in PARAMS["train"].items() if isinstance(v, dict)]:
                    assert key.split(".")[1] in s["cmd"], f"{name}: another method's section {key}"


def test_train_branches_list_only_their_own_mode_section():
    full, lora = _expand(DVC["stages"]["train"])
    assert "train.full" in full["params"] and "train.lora" not in full["params"]
    assert "train.lora" in lora["params"] and "train.full" not in lora["params"]


INFRASTRUCTURE = {"errors", "io", "params"}  # logging, atomic writes, the loader: they change no output's content


def _pairtune_imports(path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pairtune":
            if node.module == "pairtune":
                names |= {a.name for a in node.names}
            else:
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pairtune.")}
    return names


def test_every_stage_depends_on_the_library_modules_it_runs():
    """A stage whose code path imports a module (at any depth) must rerun when that module changes."""
    for name, stage in DVC["stages"].items():
        for s in _expand(stage):
            script = re.search(r"python (stages/\S+\.py)", s["cmd"]).group(1)
            seen, todo = set(), _pairtune_imports(ROOT / script)
            while todo:
                mod = todo.pop()
                if mod not in seen:
                    seen.add(mod)
                    todo |= _pairtune_imports(ROOT / "src" / "pairtune" / f"{mod}.py")
            for mod in sorted(seen - INFRASTRUCTURE):
                assert f"src/pairtune/{mod}.py" in s["deps"], f"{name}: imports pairtune.{mod} but does not depend on it"
