from __future__ import annotations

import json

import generate as generate_stage
import pytest

from pairtune import generate as g
from conftest import TINY_PARAMS, write_params

SIZES = {"train": 1475, "dev": 295, "eval": 295}


@pytest.fixture(scope="module")
def splits():
    return g.generate(42, SIZES)


def _run(tmp_path, name):
    out = tmp_path / name
    write_params(tmp_path / "params.yaml", TINY_PARAMS)
    generate_stage.main(["--params", str(tmp_path / "params.yaml"), "--out", str(out), "--summary", str(out) + ".json"])
    return out


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b")
    for split in ("train", "dev", "eval"):
        assert (a / f"{split}.jsonl").read_bytes() == (b / f"{split}.jsonl").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_other_seed_differs():
    assert g.generate(1, {"train": 50, "dev": 20, "eval": 20}) != g.generate(2, {"train": 50, "dev": 20, "eval": 20})


def test_default_sizes_and_balance(splits):
    assert {k: len(v) for k, v in splits.items()} == SIZES
    for pairs in splits.values():
        share = sum(p["label"] for p in pairs) / len(pairs)
        assert 0.45 <= share <= 0.55
        assert {p["pair_type"] for p in pairs} == set(g.PAIR_TYPES)
        assert {"lifestyle", "interests", "values", "dealbreakers", "mixed"} == {p["category"] for p in pairs}


def test_splits_disjoint_and_no_duplicates(splits):
    keys = {s: [frozenset((p["text_1"], p["text_2"])) for p in ps] for s, ps in splits.items()}
    for s, k in keys.items():
        assert len(k) == len(set(k)), f"duplicate pair inside {s}"
    texts = {s: {t for p in ps for t in (p["text_1"], p["text_2"])} for s, ps in splits.items()}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["eval"] and not texts["dev"] & texts["eval"]
    summary = g.summary(splits)
    assert all(v == 0 for v in summary["overlap"].values())


def _stance(text: str, item: g.Item, cells: g.Cells) -> set[int]:
    return {s for s in (1, -1) if text in g.statements(item, s, cells)}


def test_label_rule_holds(splits):
    """Recompute each label from the documented rule: 0 iff some item has opposite stances in the two texts."""
    cells = g.split_cells(42)
    by_name = {it.activity: it for it in g.items()}
    for split, pairs in splits.items():
        tpl = cells[split]
        for p in pairs:
            if p["pair_type"].startswith("mixed"):
                continue  # mixed statements hold two pro stances; checked below
            stances = [(_stance(p["text_1"], by_name[i], tpl), _stance(p["text_2"], by_name[i], tpl)) for i in p["items"]]
            conflict = any(a and b and a != b for a, b in stances)
            assert p["label"] == (0 if conflict else 1), p
    for p in splits["train"]:
        if p["pair_type"] == "mixed_conflict":
            assert p["label"] == 0
        if p["pair_type"] == "mixed_compatible":
            assert p["label"] == 1 and len(set(p["items"])) == 3


def test_cells_are_dealt_once():
    cells = g.split_cells(42)
    for family in ("pro", "con", "mixed"):
        parts = [getattr(cells[s], family) for s in g.SPLITS]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(parts[0]) > 3 * len(parts[2]) > 0
    every = {(t, it.activity) for t in g.PRO_TEMPLATES for it in g.items()}
    assert cells["train"].pro | cells["dev"].pro | cells["eval"].pro == every


def test_summary_written_as_metrics(tmp_path):
    _run(tmp_path, "x")
    summary = json.loads((tmp_path / "x.json").read_text())
    assert summary["train"]["pairs"] == TINY_PARAMS["generate"]["n_train"]
    assert set(summary["overlap"]) >= {"train_eval_pairs", "train_eval_texts"}
