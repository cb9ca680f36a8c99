"""The real packaged all-MiniLM-L6-v2: loads offline, gives the known cosine, is inverted on our eval split."""

from __future__ import annotations

import numpy as np
import pytest

from pairtune import models
from pairtune.evaluation import unique_texts
from pairtune.generate import generate
from pairtune.metrics import auc, pair_scores, spearman

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base():
    return models.load_base("packaged", "cpu")


def test_packaged_model_loads_offline_with_known_cosine(base, monkeypatch):
    assert models.count_params(base)[1] == 22_713_216
    a, b = models.embed(base, ["A man is eating food.", "A man is eating a piece of bread."])
    assert float(a @ b) == pytest.approx(0.755, abs=0.001)


def test_generated_eval_split_inverts_the_base_model(base):
    ev = generate(42, {"train": 1475, "dev": 295, "eval": 295})["eval"]
    texts = unique_texts(ev)
    s = pair_scores(models.embed(base, texts), {t: i for i, t in enumerate(texts)}, ev)
    y = np.array([p["label"] for p in ev])
    assert spearman(s, y.astype(float)) < 0
    assert auc(s, y) < 0.5


def test_packed_forward_gives_stock_embeddings_on_the_real_model(base):
    """The training fast path on all-MiniLM-L6-v2: its own start-up check passes, and a 32-text batch of
    generated statements (as a training step sees them) embeds the same packed as padded."""
    import torch

    from pairtune import fastpath

    dev = generate(42, {"train": 16, "dev": 16, "eval": 16})["dev"]
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
