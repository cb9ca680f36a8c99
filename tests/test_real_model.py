"""The real packaged all-MiniLM-L6-v2: loads offline, gives the known cosine, is inverted on our eval split."""

from __future__ import annotations

import numpy as np
import pytest

from pairtune import models, params
from pairtune.evaluation import unique_texts
from pairtune.generate import generate
from pairtune.metrics import auc, pair_scores, spearman
from pairtune.params import Difficulty
from conftest import DIFFICULTY, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base():
    return models.load_base("packaged", "cpu")


def test_packaged_model_loads_offline_with_known_cosine(base, monkeypatch):
    assert models.count_params(base)[1] == 22_713_216
    a, b = models.embed(base, ["A man is eating food.", "A man is eating a piece of bread."])
    assert float(a @ b) == pytest.approx(0.755, abs=0.001)


def test_generated_eval_split_inverts_the_base_model(base):
    shipped = params.load(ROOT / "params.yaml")  # the demo data as `make repro` generates it
    g = shipped.generate
    ev = generate(shipped.seed, {"train": g.n_train, "dev": g.n_dev, "eval": g.n_eval}, g.difficulty)["eval"]
    texts = unique_texts(ev)
    s = pair_scores(models.embed(base, texts), {t: i for i, t in enumerate(texts)}, ev)
    y = np.array([p["label"] for p in ev])
    assert spearman(s, y.astype(float)) < 0
    assert auc(s, y) < 0.5


def test_an_embedding_does_not_depend_on_its_batch_on_the_real_model(base):
    """The packaged model, on demo and general texts: the same bits alone, in a sample, reversed, at any batch
    size. Measured: padded batches (SentenceTransformer.encode) differ here by ~1e-7 (the control)."""
    import random

    shipped = params.load(ROOT / "params.yaml")
    g = shipped.generate
    dev = generate(shipped.seed, {"train": 0, "dev": g.n_dev, "eval": 0}, g.difficulty)["dev"]
    general = [line.split("\t")[0] for line in (ROOT / shipped.general.path).read_text().splitlines()[1:]]
    texts = sorted(set(unique_texts(dev)) | set(general))
    whole = dict(zip(texts, models.embed(base, texts), strict=True))
    rng = random.Random(0)
    for subset, bs in [(texts[:1], 64), (texts[::-1], 2), (rng.sample(texts, 50), 7), (rng.sample(texts, 300), 64)]:
        assert np.array_equal(models.embed(base, subset, bs), np.stack([whole[t] for t in subset])), bs
    padded = base.encode(texts, batch_size=64, normalize_embeddings=True)
    assert not np.array_equal(padded, np.stack([whole[t] for t in texts]))


def test_packed_forward_gives_stock_embeddings_on_the_real_model(base):
    """The training fast path on all-MiniLM-L6-v2: its own start-up check passes, and a 32-text batch of
    generated statements (as a training step sees them) embeds the same packed as padded."""
    import torch

    from pairtune import fastpath

    dev = generate(42, {"train": 16, "dev": 16, "eval": 16}, Difficulty(**DIFFICULTY))["dev"]
    texts = [p[k] for p in dev for k in ("text_1", "text_2")]
    base.eval()
    with torch.no_grad():
        features = dict(base.preprocess(texts))
        stock = base(dict(features))["sentence_embedding"]
        with fastpath.enabled(base, packing=True, fast_dropout=True, check_texts=texts[:8]) as active:
            assert active.packed and active.fast_dropout
            packed = base(dict(features))["sentence_embedding"]
    assert int(features["attention_mask"].sum()) < features["attention_mask"].numel()  # there was padding
    torch.testing.assert_close(packed, stock, atol=1e-5, rtol=0)


# Trains the real model for a few steps with every speed knob on `auto` and reports what ran: the knobs as
# decided, and the dtype of every linear layer's output during training steps.
_AUTO_TRAINING = """
import copy, json, sys
sys.path.insert(0, sys.argv[1])
import torch
from conftest import DIFFICULTY, TINY_PARAMS
from pairtune import hardware, models, params
from pairtune.generate import generate
from pairtune.training import train
raw = copy.deepcopy(TINY_PARAMS)
raw["train"].update(bf16="auto", packing="auto", fast_dropout="auto", compact_embedding="auto")
cfg = params.from_dict(raw).train
splits = generate(42, {"train": 32, "dev": 16, "eval": 16}, params.Difficulty(**DIFFICULTY))
model = models.load_base("packaged", "cpu")
knobs = hardware.resolve(cfg, hardware.machine("cpu"), "full")
seen = set()
for m in model.modules():
    if isinstance(m, torch.nn.Linear):
        m.register_forward_hook(lambda mod, i, o: seen.add(str(o.dtype)) if mod.training else None)
result = train(model, splits["train"], splits["dev"], cfg, 1e-5, 0, "cpu", True, 0.5, knobs)
print(json.dumps({"bf16": knobs.bf16, "ran_bf16": result.bf16, "dtypes": sorted(seen), "steps": result.steps}))
"""


def _train_with_auto(env: dict[str, str]) -> dict:
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", _AUTO_TRAINING, str(ROOT / "tests")], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_without_native_bf16_auto_trains_in_fp32():
    """ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN then emulates bf16, ~10x slower: bench/) stands in for a CPU without
    native bf16: `auto` must train the real model in fp32 there, whatever this CPU has."""
    out = _train_with_auto({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert out == {"bf16": False, "ran_bf16": False, "dtypes": ["torch.float32"], "steps": 2}


def test_with_native_bf16_auto_trains_with_bf16_autocast():
    from pairtune import hardware

    if not hardware.machine("cpu").native_bf16:
        pytest.skip("this CPU has no native bf16: " + hardware.machine("cpu").why)
    out = _train_with_auto({})
    assert out["bf16"] and out["ran_bf16"] and "torch.bfloat16" in out["dtypes"]
