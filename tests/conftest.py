"""Shared fixtures: a tiny random BERT SentenceTransformer built locally (no hub), and tiny params."""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))


def _vocab() -> list[str]:
    """Special tokens plus every word and punctuation mark the generator can produce."""
    from pairtune import generate as g

    text = g.vocabulary_text() + " a man is eating food piece of bread hello world"
    words = sorted(set(re.findall(r"[a-z]+|[^\sa-z]", text.lower())))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers, 4 heads) saved as a SentenceTransformer folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    hf = root / "hf"
    hf.mkdir()
    (hf / "vocab.txt").write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab=str(hf / "vocab.txt"), do_lower_case=True).save_pretrained(hf)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(hf)
    transformer = Transformer(str(hf), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    out = root / "st"
    model.save(str(out))
    return out


FAMILIES = ("roberta", "xlm-roberta", "distilbert", "mpnet")  # besides BERT (tiny_model_dir)


def build_tiny_family(root: Path, family: str) -> Path:
    """A tiny random model of another encoder family (hidden 32, 2 layers) with its own kind of tokenizer,
    saved as a SentenceTransformer folder: RoBERTa / XLM-RoBERTa with a byte-level BPE trained here on the
    generator's words (no token_type_ids), DistilBERT and MPNet with a WordPiece vocabulary (MPNet's
    special tokens are <s>, </s>, <pad>, ...). No hub."""
    import torch
    import transformers as T
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    hf = root / family / "hf"
    hf.mkdir(parents=True)
    words = [w for w in _vocab() if not w.startswith("[")]
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if family in ("roberta", "xlm-roberta"):
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator([" ".join(words)] * 3, vocab_size=400, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.save_model(str(hf))
        tok = T.RobertaTokenizerFast(vocab=str(hf / "vocab.json"), merges=str(hf / "merges.txt"))
        config_cls, model_cls = ((T.RobertaConfig, T.RobertaModel) if family == "roberta"
                                 else (T.XLMRobertaConfig, T.XLMRobertaModel))
        config = config_cls(vocab_size=len(tok), max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                            eos_token_id=2, type_vocab_size=1, **size)
    elif family == "distilbert":
        (hf / "vocab.txt").write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
        tok = T.DistilBertTokenizerFast(vocab=str(hf / "vocab.txt"), do_lower_case=True)
        config, model_cls = T.DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                               max_position_embeddings=128, pad_token_id=0), T.DistilBertModel
    elif family == "mpnet":
        (hf / "vocab.txt").write_text("\n".join(["<s>", "<pad>", "</s>", "[UNK]", "<mask>", *words]) + "\n",
                                      encoding="utf-8")
        tok = T.MPNetTokenizerFast(vocab=str(hf / "vocab.txt"), do_lower_case=True)
        config, model_cls = T.MPNetConfig(vocab_size=len(tok), max_position_embeddings=130, pad_token_id=1,
                                          **size), T.MPNetModel
    else:
        raise ValueError(family)
    tok.save_pretrained(hf)
    torch.manual_seed(0)
    model_cls(config).save_pretrained(hf)
    transformer = Transformer(str(hf), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    out = root / family / "st"
    model.save(str(out))
    return out


# The shipped params.yaml difficulty (tests that need other knobs copy and edit it).
DIFFICULTY = {"multi_clause": 0.1, "hedged": 0.25, "contrast": 0.15, "informal": 0.15, "label_noise": 0.01}

TINY_PARAMS = {
    "seed": 7,
    "generate": {"n_train": 160, "n_dev": 48, "n_eval": 48, "difficulty": DIFFICULTY},
    "data": {"dir": "data/demo", "train": "data/demo/train.jsonl", "dev": "data/demo/dev.jsonl",
             "eval": "data/demo/eval.jsonl", "text_1": "text_1", "text_2": "text_2", "label": "label",
             "label_min": 0.0, "label_max": 1.0, "positive_threshold": 0.5,
             "positive_name": "compatible", "negative_name": "incompatible"},
    "prepare": {"dev_fraction": 0.15, "on_overlap": "error"},
    "base": {"model": "TINY", "probe_size": 16},
    "train": {"epochs": 1, "max_steps": 0, "batch_size": 16, "warmup_steps": 2, "scheduler": "linear", "loss": "cosine",
              "checkpoint": "last", "device": "cpu", "bf16": False, "packing": True,
              "fast_dropout": True, "compact_embedding": True, "processes": 1, "methods": ["full", "lora"],
              "full": {"method": "full", "lr": 1e-3},
              "lora": {"method": "lora", "lr": 1e-2, "r": 4, "alpha": 8, "dropout": 0.0,
                       "target_modules": ["query", "value"], "rslora": False, "dora": False,
                       "init": "default", "loraplus_ratio": 1}},
    # the tiny run is 10 steps: rungs of 3 x 10 and 2 x 10 (a trial is never longer than the run it stands for)
    "tune": {"metric": "auto", "budget": 7.0, "rungs": 2, "tie": 0.002, "extend": 1, "retries": 1, "retry_factor": 0.5,
             "full": [1e-4, 1e-3, 1e-2],
             "lora": [1e-3, 1e-2, 5e-2]},
    "evaluate": {"batch_size": 64, "bootstrap": 50, "confidence": 0.95, "recall_target": 0.9, "worst_errors": 5, "cluster": True,
                 "cluster_sample": 0, "cluster_seeds": 2,
                 "umap_neighbors": 5, "umap_min_dist": 0.1, "hdbscan_min_cluster": 5, "hdbscan_min_samples": 2},
    "report": {"examples": 3, "plateau": 0.005},
    "seeds": {"n": 1},
    # a random 32-wide BERT: int8 keeps its ranking only roughly; int8 quality is tested on the real model
    "export": {"opset": 18, "exporter": "auto", "int8_method": "dynamic", "int8_per_channel": True, "embed_atol": 1e-5, "parity_texts": 20, "onnx_atol": 1e-4, "int8_auc_tol": 0.2,
               "int8_spearman_tol": 0.2, "strict": False, "operating_point": "chosen"},
    "general": {"path": "data/general/tiny.tsv", "text_1": "sentence1", "text_2": "sentence2", "label": "score",
                "label_min": 0.0, "label_max": 5.0, "positive_threshold": 0.6},
    "interpolate": {"steps": 4, "search": "descend", "rule": "auc_drop", "max_auc_drop": 0.05, "min_retention": 0.5,
                    "grid_pairs": 0},
}


@pytest.fixture
def tiny_params(tiny_model_dir: Path) -> dict:
    """A fresh, mutable copy of the tiny params, pointing at the tiny model."""
    p = copy.deepcopy(TINY_PARAMS)
    p["base"]["model"] = str(tiny_model_dir)
    return p


def write_params(path: Path, params: dict) -> Path:
    from ruamel.yaml import YAML

    with path.open("w", encoding="utf-8") as fh:
        YAML(typ="safe", pure=True).dump(params, fh)
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run a test inside an empty folder (stages resolve data.* paths against the working directory)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_demo_data(root: Path, base: bool = False) -> None:
    """generate -> prepare (-> base) in `root`, with its params.yaml, as the pipeline's first stages do."""
    import base as base_stage
    import generate as generate_stage
    import prepare as prepare_stage

    old = os.getcwd()
    os.chdir(root)
    try:
        generate_stage.main(["--out", "data/demo", "--summary", "metrics/generate.json"])
        prepare_stage.main(["--out", "data/prepared", "--summary", "metrics/prepare.json"])
        if base:
            base_stage.main(["--data", "data/prepared", "--out", "models/base"])
    finally:
        os.chdir(old)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir):
    """generate -> prepare -> base -> train@full, train@lora on tiny params, in a temp folder (shared)."""
    import train as train_stage

    root = tmp_path_factory.mktemp("trained")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["base"]["model"] = str(tiny_model_dir)
    write_params(root / "params.yaml", params)
    write_tiny_general(root / params["general"]["path"])
    make_demo_data(root, base=True)
    old = os.getcwd()
    os.chdir(root)
    try:
        for mode in ("full", "lora"):
            train_stage.main(["--mode", mode, "--data", "data/prepared", "--base", "models/base", "--out",
                              f"models/{mode}", "--metrics", f"metrics/train/{mode}.json", "--live", f"dvclive/train_{mode}"])
    finally:
        os.chdir(old)
    return root


@pytest.fixture(scope="session")
def more_kinds(trained, tmp_path_factory):
    """#36: rsLoRA, DoRA, PiSSA, OLoRA, LoRA+ and IA3 methods trained on the tiny model by the train stage's code."""
    from dataclasses import replace

    from pairtune import params as P
    from pairtune.data import read_prepared
    from pairtune.params import Ia3Method
    from pairtune.training import train_mode

    p = P.load(trained / "params.yaml")
    lora = p.train.method("lora")
    sections = {"rslora": replace(lora, rslora=True, r=8), "dora": replace(lora, dora=True),
                "pissa": replace(lora, init="pissa"), "olora": replace(lora, init="olora"),
                "loraplus": replace(lora, loraplus_ratio=16.0),
                "ia3": Ia3Method(method="ia3", lr=5e-2, target_modules=("key", "value", "ffn_out"),
                                 feedforward_modules=("ffn_out",))}
    p = replace(p, train=replace(p.train, sections={**p.train.sections, **sections}))
    root = tmp_path_factory.mktemp("kinds")
    train, dev = (read_prepared(trained / f"data/prepared/{s}.jsonl") for s in ("train", "dev"))
    out = {}
    for name in sections:
        (root / name).mkdir()
        out[name] = (root / name, train_mode(name, p, train, dev, True, str(trained / "models/base"), root / name, None))
    return out


def flip_eval_labels(prepared: Path, dst: Path) -> Path:
    """A copy of a prepared data folder with every eval label flipped: a stage that chooses anything on dev
    must choose the same on it."""
    import shutil

    shutil.copytree(prepared, dst, dirs_exist_ok=True)
    rows = [json.loads(line) for line in (dst / "eval.jsonl").read_text().splitlines()]
    (dst / "eval.jsonl").write_text("".join(json.dumps(dict(r, label=1 - r["label"])) + "\n" for r in rows))
    return dst


def write_tiny_general(path: Path, n: int = 30) -> Path:
    """A general-set stand-in the tiny random BERT can rank: graded by word overlap with the first text
    (itself 5, its first half 2.5, another text 0), built from generator sentences it has words for."""
    from pairtune.generate import generate

    from pairtune.params import Difficulty

    splits = generate(3, {"train": 40, "dev": 8, "eval": 8}, Difficulty(**DIFFICULTY))
    pool = sorted({p[k] for p in splits["train"] for k in ("text_1", "text_2")})
    texts = pool[:n]
    rows = ["sentence1\tsentence2\tscore"]
    for i, t in enumerate(texts):
        words = t.split()
        rows += [f"{t}\t{t}\t5.0", f"{t}\t{' '.join(words[: max(1, len(words) // 2)])}\t2.5",
                 f"{t}\t{texts[(i * 7 + 3) % len(texts)]}\t0.0"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# Every code block in README and docs/ is either run by a test or says why not, in an HTML comment on the line
# before it (invisible on the rendered page): `<!-- commands: run by tests/FILE.py::TEST -->` or
# `<!-- commands: not run: REASON -->`. tests/test_docs.py checks every block has one; doc_blocks() hands a test
# the blocks that name it.
DOC_PAGES = ("README.md", "docs/*.md")
DOC_MARKER = re.compile(r"<!-- commands: (run by (?P<test>\S+)|not run: (?P<why>[^>]+?)) -->\n```(?P<lang>\w+)\n"
                        r"(?P<code>.*?)```", re.S)
DOC_FENCE = re.compile(r"^```(bash|sh|shell|console|python)$", re.M)


def doc_pages() -> list[Path]:
    return [p for pattern in DOC_PAGES for p in sorted(ROOT.glob(pattern))]


def doc_blocks(test: str) -> list[str]:
    """The code of every block in README and docs/ marked `run by TEST` (e.g. tests/test_export.py::test_x), in
    page order, as a reader copies it."""
    found = [m["code"] for page in doc_pages() for m in DOC_MARKER.finditer(page.read_text(encoding="utf-8"))
             if m["test"] == test]
    assert found, f"no documented block is marked 'run by {test}'"
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first: with `make test`'s two xdist workers (one test file each at a time), the DVC pipeline
    tests start at once on one worker while the other runs everything else."""
    items.sort(key=lambda item: item.get_closest_marker("pipeline") is None)
