"""Every supported encoder family through every stage, on tiny random models built here (no hub):
train (full and LoRA) -> the load guard -> evaluate -> interpolate -> export parity -> `pairtune score`;
LoRA targets by role; the one-line errors for a target that matches nothing and an unsupported model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import (FAMILIES, ROOT, TINY_PARAMS, build_tiny_family, make_demo_data, write_params,
                      write_tiny_general)

from pairtune import families, models
from pairtune.errors import PairtuneError

# what the roles `query` and `value` must adapt in each family (module name endings)
QUERY_VALUE = {"roberta": ("attention.self.query", "attention.self.value"),
               "xlm-roberta": ("attention.self.query", "attention.self.value"),
               "distilbert": ("attention.q_lin", "attention.v_lin"),
               "mpnet": ("attention.attn.q", "attention.attn.v")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The tiny demo data, generated and prepared once for every family."""
    root = tmp_path_factory.mktemp("famdata")
    write_params(root / "params.yaml", TINY_PARAMS)
    make_demo_data(root)
    return root / "data/prepared"


def _stage(name: str, *args: str) -> None:
    module = __import__(name)
    module.main(list(args))


# every stage on each family's code; XLM-RoBERTa's model code is RoBERTa's (transformers copies it), so it is
# run through the stages here only via the role map and the base stage's family check below
STAGED = tuple(f for f in FAMILIES if f != "xlm-roberta")


@pytest.fixture(scope="module", params=STAGED)
def family_run(request, tmp_path_factory, prepared):
    """The pipeline's stages, in process, on one family's tiny model with the tiny params."""
    root = tmp_path_factory.mktemp(f"fam-{request.param}")
    model_dir = build_tiny_family(root / "model", request.param)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["base"]["model"] = str(model_dir)
    params["evaluate"]["cluster"] = False  # UMAP + HDBSCAN is family-independent and tested elsewhere
    write_params(root / "params.yaml", params)
    write_tiny_general(root / params["general"]["path"])
    shutil.copytree(prepared, root / "data/prepared")
    old = os.getcwd()
    os.chdir(root)
    try:
        _stage("base", "--data", "data/prepared", "--out", "models/base")
        for mode in ("full", "lora"):
            _stage("train", "--mode", mode, "--data", "data/prepared", "--base", "models/base", "--out",
                   f"models/{mode}", "--metrics", f"metrics/train/{mode}.json", "--live", f"dvclive/train_{mode}")
            _stage("evaluate", "--model", f"models/{mode}", "--data", "data/prepared", "--metrics",
                   f"metrics/evaluate/{mode}.json", "--plots", f"plots/evaluate/{mode}")
            _stage("export", "--model", f"models/{mode}", "--data", "data/prepared", "--evaluate",
                   f"plots/evaluate/{mode}/details.json", "--out", f"models/export/{mode}", "--metrics",
                   f"metrics/export/{mode}.json")
        _stage("interpolate", "--base", "models/base", "--model", "models/lora", "--data", "data/prepared",
               "--out", "models/interpolated/lora", "--metrics", "metrics/interpolate/lora.json",
               "--plots", "plots/interpolate/lora")
    finally:
        os.chdir(old)
    return request.param, root


def test_every_stage_runs_and_every_model_passes_the_guard(family_run):
    family, root = family_run
    base = json.loads((root / "models/base/pairtune.json").read_text())
    assert base["model_type"] == family and base["family"] == families.family_of(family).name
    for folder in ("models/full", "models/lora", "models/interpolated/lora", "models/export/full",
                   "models/export/lora"):
        models.load_model(root / folder, "cpu")  # probe reproduced, and not the base in disguise
    live = json.loads((root / "dvclive/train_lora/train.json").read_text())
    assert live["trainable_params"] == 2 * 2 * (4 * 32 + 32 * 4)  # 2 layers x (query, value) x (A + B), r=4
    assert live["packed"] == 0  # packing is exact for BERT only: off, with a warning
    cfg = json.loads((root / "models/lora/adapter_config.json").read_text())
    assert all(end.replace(".", "\\.") in cfg["target_modules"] for end in QUERY_VALUE[family])
    for mode in ("full", "lora"):
        ev = json.loads((root / f"metrics/evaluate/{mode}.json").read_text())[mode]
        assert 0.0 <= ev["auc"] <= 1.0


def test_export_takes_the_tokenizers_inputs_and_matches_pytorch(family_run):
    import onnx

    family, root = family_run
    for mode in ("full", "lora"):
        metrics = json.loads((root / f"metrics/export/{mode}.json").read_text())
        assert metrics["status"]["standalone"] == "ok" and metrics["status"]["onnx"] == "ok", metrics["status"]
        assert metrics["onnx_cosine_max_abs"] <= TINY_PARAMS["export"]["onnx_atol"]
        graph = onnx.load(str(root / f"models/export/{mode}/onnx/model.onnx"), load_external_data=False).graph
        # none of these families' tokenizers gives token_type_ids, so neither does the graph take them
        assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]


def test_pairtune_score_on_each_export(family_run):
    family, root = family_run
    for backend in ("onnx", "torch"):
        proc = subprocess.run([sys.executable, "-m", "pairtune.cli", "score", str(root / "models/export/lora"),
                               "I smoke every day.", "I would never date a smoker.", "--backend", backend],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.startswith("cosine "), proc.stdout


def _tiny(tmp_path_factory, family):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(build_tiny_family(tmp_path_factory.mktemp(family), family)), device="cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_roles_map_to_each_familys_modules(tmp_path_factory, family):
    model = _tiny(tmp_path_factory, family)
    backbone, kind = model[0].model, families.model_type(model)
    _, chosen = families.target_regex(backbone, kind, ("query", "value"), models.UNUSED_MODULES)
    assert len(chosen) == 4 and all(n.endswith(QUERY_VALUE[family]) for n in chosen)
    _, every = families.target_regex(backbone, kind, ("all_linear",), models.UNUSED_MODULES)
    assert len(every) == 2 * 6 and not [n for n in every if "pooler" in n]  # 2 layers x 6 linears, no pooler
    # an explicit module name still works as PEFT matches it (by suffix)
    name = QUERY_VALUE[family][0].split(".")[-1]
    assert families.target_regex(backbone, kind, (name,), models.UNUSED_MODULES)[1] == chosen[::2]


def test_a_target_that_matches_nothing_lists_the_models_linear_layers(tmp_path_factory):
    model = _tiny(tmp_path_factory, "mpnet")
    with pytest.raises(PairtuneError) as err:
        families.target_regex(model[0].model, "mpnet", ("query", "q_lin"), models.UNUSED_MODULES)
    line = str(err.value)
    assert "\n" not in line and "'q_lin' matches no linear layer" in line
    assert "encoder.layer.*.attention.attn.q" in line and "roles: query, key, value" in line


def test_a_target_the_embedding_never_uses_is_an_error(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    with pytest.raises(PairtuneError, match="'pooler.dense' matches only pooler.dense, which the sentence "
                                            "embedding never uses"):
        families.target_regex(model[0].model, "bert", ("pooler.dense",), models.UNUSED_MODULES)


def test_an_unsupported_architecture_is_one_line_before_training(tmp_path, tiny_model_dir):
    """An ALBERT (BERT's vocabulary, another architecture): the base stage, first to load the model, stops."""
    import torch
    import transformers as T
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    hf = tmp_path / "hf"
    T.BertTokenizerFast.from_pretrained(str(tiny_model_dir)).save_pretrained(hf)
    torch.manual_seed(0)
    T.AlbertModel(T.AlbertConfig(vocab_size=600, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=64)).save_pretrained(hf)
    SentenceTransformer(modules=[Transformer(str(hf)), Pooling(32, "mean")], device="cpu").save(str(tmp_path / "st"))
    params = json.loads(json.dumps(TINY_PARAMS))
    params["base"]["model"] = str(tmp_path / "st")
    write_params(tmp_path / "params.yaml", params)
    (tmp_path / "dev.jsonl").write_text(json.dumps({"text_1": "a", "text_2": "b", "label": 1}) + "\n")
    proc = subprocess.run([sys.executable, str(ROOT / "stages/base.py"), "--params", str(tmp_path / "params.yaml"),
                           "--data", str(tmp_path), "--out", str(tmp_path / "base")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: base.model ")
    assert "model type 'albert' is not supported; supported: BERT (bert), RoBERTa" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "base").exists()


@pytest.mark.parametrize("family_run", ["mpnet"], indirect=True)
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ddp_trains_a_non_bert_family(family_run, tmp_path, mode):
    """2 DDP workers (gloo) on MPNet, whose relative-position attention shares nothing with BERT's code path
    (one family is enough for the launcher; every family's single-process run is above)."""
    family, root = family_run
    raw = json.loads(json.dumps(TINY_PARAMS))
    raw["base"]["model"] = json.loads((root / "models/base/pairtune.json").read_text())["base_model"]
    raw["train"]["processes"] = 2
    write_params(tmp_path / "params.yaml", raw)
    out = tmp_path / mode
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py"), "--mode", mode, "--data",
                           str(root / "data/prepared"), "--base", str(root / "models/base"), "--out", str(out),
                           "--metrics", str(tmp_path / "m.json"), "--live", str(tmp_path / "live"), "--params",
                           str(tmp_path / "params.yaml")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching 2 DDP workers (gloo)" in proc.stderr
    assert json.loads((tmp_path / "live/train.json").read_text())["processes"] == 2
    models.load_model(out, "cpu")


def test_xlm_roberta_is_a_supported_family(tmp_path_factory):
    model = _tiny(tmp_path_factory, "xlm-roberta")
    assert families.check_supported(model, "x").name == "RoBERTa / XLM-RoBERTa"
