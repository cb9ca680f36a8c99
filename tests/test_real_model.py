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
