from __future__ import annotations

import copy

import pytest

from pairtune import params
from pairtune.errors import PairtuneError
from conftest import ROOT, TINY_PARAMS, write_params


def test_repo_params_load():
    p = params.load(ROOT / "params.yaml")
    lora, full = p.train.method("lora"), p.train.method("full")
    assert p.train.methods == ("full", "lora")  # the default comparison, as before methods were a list (#36)
    assert lora.r == 8 and lora.target_modules == ("query", "value") and not lora.rslora and not lora.dora
    assert full.lr == "auto" and lora.lr == "auto"  # chosen on dev by the tune stage
    assert 2e-5 in p.tune.grid("full")  # full's original recipe is one of the candidates
    # the other methods ship as sections, each with its grid, ready to be named in train.methods
    assert {"dora", "rslora16", "lora_all", "ia3"} <= set(p.train.sections) <= set(p.tune.grids)
    # LoRA's original 2e-4 was never chosen (bench/operating.json); the search still reaches near it, one step
    # past the grid's smallest rate (tune.extend), where dev points that way
    from pairtune.tune import beyond

    assert p.tune.extend >= 1 and beyond(min(p.tune.grid("lora")), list(p.tune.grid("lora"))) == 2.5e-4
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
    # methods as data (#36): a section's kind, the list naming sections, each with its grid
    (lambda p: p["train"]["lora"].update(method="prefix"), "train.lora.method: 'prefix' is not one of full, lora, ia3"),
    (lambda p: p["train"]["lora"].pop("method"), "train.lora: unknown key (a method section has a `method: full | lora | ia3` key)"),
    (lambda p: p["train"].update(methods=["full", "dora"]), "train.methods: 'dora' has no section train.dora"),
    (lambda p: p["train"].update(methods=["full", "full"]), "train.methods: a method is listed twice"),
    (lambda p: p["train"].update(methods=["export"], export={"method": "full", "lr": 1e-3}),
     "train.methods: 'export' cannot name a method"),
    (lambda p: p["train"].update(methods=["Full"], Full={"method": "full", "lr": 1e-3}), "train.methods: 'Full' cannot name"),
    (lambda p: p["tune"].pop("lora"), "tune.lora: missing key (the candidate learning rates of train.lora"),
    (lambda p: p["train"]["lora"].update(rslora="yes"), "train.lora.rslora: expected bool"),
    (lambda p: p["tune"].update(extnd=[1.0]), "tune.extnd: unknown key (candidate rates need a method section train.extnd)"),
    (lambda p: p["train"].update(ia3={"method": "ia3", "lr": 1e-2, "target_modules": ["key"],
                                     "feedforward_modules": ["ffn_out"]}),
     "train.ia3.feedforward_modules: ['ffn_out'] must be among its target_modules ['key']"),
    (lambda p: p["train"]["lora"].update(init="loftq"), "train.lora.init: 'loftq' is not one of default, pissa, olora"),
    (lambda p: p["train"]["lora"].update(init="pissa", dora=True),
     "train.lora.init: pissa with dora: true cannot be saved as an adapter of the untouched base"),
    (lambda p: p["train"]["lora"].update(loraplus_ratio=0.5), "train.lora.loraplus_ratio: 0.5 is outside [1, 1000]"),
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


def test_auto_class_names_are_the_demo_s_only_on_the_demo_data(tmp_path):
    """#37: own pairs with only the data paths changed get neutral names, not the demo's compatible/incompatible."""
    demo = params.load(ROOT / "params.yaml")
    assert demo.data.positive_name == "auto" and demo.data.class_names == ("compatible", "incompatible")
    own = copy.deepcopy(TINY_PARAMS)
    own["data"].update(dir="data/raw", train="data/raw/sts_train.csv", dev="", eval="data/raw/sts_eval.csv",
                       positive_name="auto", negative_name="auto")
    p = params.load(write_params(tmp_path / "own.yaml", own))
    assert p.data.class_names == ("similar", "dissimilar") and not p.data.is_demo
    own["data"].update(positive_name="duplicate")  # a name the user gives is kept
    assert params.load(write_params(tmp_path / "named.yaml", own)).data.class_names == ("duplicate", "dissimilar")


def test_the_model_card_s_example_is_the_user_s_own_pair():
    from pairtune import export

    manifest = {"source_mode": "full", "parity": {"standalone_max_abs": 0.0}, "threshold": 0.5,
                "variants": {"onnx": "refused: test", "int8": "refused: test"}, "base_model": "packaged",
                "data": {"train_pairs": 1, "dev_pairs": 1, "eval_pairs": 1}, "loss": "cosine", "positive": "similar",
                "negative": "dissimilar", "lr": 1e-4}
    card = export.model_card(manifest, {"auc": 0.9, "spearman": 0.8, "f1": 0.7, "margin": 0.1}, 0.95,
                             ("How do I reset my password?", "Use the 'forgot password' link."))
    assert '"How do I reset my password?"' in card and "smoke" not in card


@pytest.mark.parametrize(("data", "message"), [
    # #34: only train set to the user's file: dev and eval would silently stay the demo's
    ({"dir": "data/raw", "train": "data/raw/mine.csv"},
     "own.yaml: data.dev: data/demo/dev.jsonl is the demo's pairs while data.dir is data/raw: point it at your "
     'own file (or "" to split dev off train: prepare.dev_fraction)'),
    ({"dir": "data/raw", "train": "data/raw/mine.csv", "dev": ""},
     "own.yaml: data.eval: data/demo/eval.jsonl is the demo's pairs while data.dir is data/raw: point it at your "
     "own file"),
    # the paths set, data.dir forgotten: DVC would not watch the user's files
    ({"train": "data/raw/mine.csv", "dev": "", "eval": "data/raw/held_out.csv"},
     "own.yaml: data.train: data/raw/mine.csv is not inside data.dir (data/demo), the folder DVC watches for "
     "your pair files: set data.dir to the folder that holds it"),
    ({"dir": "data/raw", "train": "data/raw/mine.csv", "dev": "", "eval": "elsewhere/held_out.csv"},
     "own.yaml: data.eval: elsewhere/held_out.csv is not inside data.dir (data/raw)"),
])
def test_own_data_is_never_mixed_with_the_demo_s(tmp_path, data, message):
    own = copy.deepcopy(TINY_PARAMS)
    own["data"].update(data)
    with pytest.raises(PairtuneError) as err:
        params.load(write_params(tmp_path / "own.yaml", own))
    assert str(err.value).startswith(str(tmp_path / message.split(":")[0]) + message[len(message.split(":")[0]):])
    assert "\n" not in str(err.value)


def test_a_data_dir_spelled_another_way_is_the_same_folder(tmp_path):
    own = copy.deepcopy(TINY_PARAMS)
    own["data"].update(dir="./data/raw/", train="data/raw/a.csv", dev="data/raw/sub/b.csv", eval="data/raw/c.csv")
    assert not params.load(write_params(tmp_path / "own.yaml", own)).data.is_demo


def test_a_method_section_not_listed_is_checked_but_not_run(tmp_path):
    """#36: a section of train with a `method` is a method; listing it in train.methods is what runs it."""
    raw = copy.deepcopy(TINY_PARAMS)
    raw["train"]["dora"] = {**raw["train"]["lora"], "dora": True}
    raw["tune"]["dora"] = [1e-3, 1e-2]
    p = params.load(write_params(tmp_path / "params.yaml", raw))
    assert p.train.methods == ("full", "lora") and p.train.method("dora").dora and p.tune.grid("dora") == (1e-3, 1e-2)
    raw["train"]["methods"] = ["lora", "dora"]
    assert params.load(write_params(tmp_path / "params.yaml", raw)).train.methods == ("lora", "dora")
    with pytest.raises(PairtuneError, match=r"train.ia3: no such method section \(train.methods: \['full', 'lora'\]\)"):
        p.train.method("ia3")
