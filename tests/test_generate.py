from __future__ import annotations

import dataclasses
import json

import generate as generate_stage
import pytest

from pairtune import generate as g
from pairtune import params
from pairtune.errors import PairtuneError
from conftest import DIFFICULTY, TINY_PARAMS, write_params

SIZES = {"train": 1475, "dev": 295, "eval": 295}
KNOBS = params.Difficulty(**DIFFICULTY)
EASY = params.Difficulty(multi_clause=0.0, hedged=0.0, contrast=0.0, informal=0.0, label_noise=0.0)


@pytest.fixture(scope="module")
def splits():
    return g.generate(42, SIZES, KNOBS)


def _run(tmp_path, name, raw=TINY_PARAMS):
    out = tmp_path / name
    write_params(tmp_path / "params.yaml", raw)
    generate_stage.main(["--params", str(tmp_path / "params.yaml"), "--out", str(out), "--summary", str(out) + ".json"])
    return out


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b")
    for split in ("train", "dev", "eval"):
        assert (a / f"{split}.jsonl").read_bytes() == (b / f"{split}.jsonl").read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_other_seed_differs():
    sizes = {"train": 50, "dev": 20, "eval": 20}
    assert g.generate(1, sizes, KNOBS) != g.generate(2, sizes, KNOBS)


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


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_no_leak_for_other_seeds(seed):
    """Informal rewrites of different sentences must never meet across splits (generate checks it too)."""
    out = g.generate(seed, {"train": 600, "dev": 150, "eval": 150},
                     dataclasses.replace(KNOBS, informal=1.0))
    assert all(v == 0 for v in g.summary(out)["overlap"].values())


def test_label_rule_holds(splits):
    """Every label is the documented rule applied to the stances the texts carry, unless marked flipped, and
    each text's stances are those of the sentence families it came from."""
    cells = g.split_cells(42)
    by_name = {it.activity: it for it in g.items()}
    for split, pairs in splits.items():
        for p in pairs:
            rule = g.label_of(p["stances_1"], p["stances_2"])
            assert p["label"] == (1 - rule if p["label_flipped"] else rule), p
            assert rule == (0 if p["pair_type"] in g.NEGATIVE_TYPES else 1), p
            for text, stances in ((p["text_1"], p["stances_1"]), (p["text_2"], p["stances_2"])):
                if len(stances) == 1 and text[:1].isupper() and text.endswith("."):  # formal single statement
                    (item, stance), = stances.items()
                    assert text in g.statements(by_name[item], stance, cells[split]) or ":" in text, (text, stances)


def test_conflict_rule():
    assert g.conflict(2, -2) and g.conflict(-1, 2) and g.conflict(-2, 1)
    assert not g.conflict(1, -1) and not g.conflict(0, -2) and not g.conflict(2, 1)
    assert g.label_of({"smoking": 1}, {"smoking": -2, "hiking": 2}) == 0
    assert g.label_of({"smoking": 1}, {"smoking": -1}) == 1
    assert g.label_of({"smoking": 2, "hiking": -2}, {"hiking": -1}) == 1


def test_cells_are_dealt_once():
    cells = g.split_cells(42)
    for family in ("single", "two"):
        parts = [getattr(cells[s], family) for s in g.SPLITS]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert len(parts[0]) > 3 * len(parts[2]) > 0
    every = {(st, t, it.activity) for st, ts in g.SINGLE.items() for t in ts for it in g.items()}
    assert cells["train"].single | cells["dev"].single | cells["eval"].single == every


def _share(pairs, pred):
    return sum(map(pred, pairs)) / len(pairs)


def test_knobs_change_what_they_say():
    """Each difficulty knob, measured on the output: 0 gives none of what it controls, 1 (or its share)
    gives that share."""
    sizes = {"train": 800, "dev": 100, "eval": 100}
    easy = g.generate(5, sizes, EASY)["train"]
    assert _share(easy, lambda p: p["pair_type"] in ("opposite_stance", "same_stance", "different_topic")) == 1
    assert _share(easy, lambda p: p["label_flipped"]) == 0
    assert all(abs(s) == 2 for p in easy for s in [*p["stances_1"].values(), *p["stances_2"].values()])

    def knob(**kw):
        return g.generate(5, sizes, dataclasses.replace(EASY, **kw))["train"]

    noisy = knob(label_noise=0.1)
    flipped = [p for p in noisy if p["label"] != g.label_of(p["stances_1"], p["stances_2"])]
    assert len(flipped) == 80 and all(p["label_flipped"] for p in flipped)
    multi = knob(multi_clause=0.5)
    assert 0.43 < _share(multi, lambda p: p["category"] == "mixed") < 0.57
    hedged = knob(hedged=1.0)
    assert _share(hedged, lambda p: p["pair_type"] in ("hedged_conflict", "hedged_compatible", "different_topic")) == 1
    assert _share(hedged, lambda p: any(abs(s) < 2 for s in [*p["stances_1"].values(), *p["stances_2"].values()])) == 1
    contrast = knob(contrast=1.0)
    assert _share(contrast, lambda p: p["pair_type"] == "contrast") == 0.5  # every compatible pair
    informal = knob(informal=1.0)
    assert _share(informal, lambda p: p["text_1"] != p["text_1"].capitalize() or not p["text_1"].endswith(".")) > 0.9


@pytest.mark.parametrize("key, value, message", [
    ("label_noise", 0.7, "generate.difficulty.label_noise: 0.7 is outside [0, 0.5]"),
    ("hedged", -0.1, "generate.difficulty.hedged: -0.1 is outside [0, 1]"),
    ("informal", "lots", "generate.difficulty.informal: expected float, got str 'lots'"),
])
def test_bad_difficulty_is_one_line(tmp_path, key, value, message):
    raw = json.loads(json.dumps(TINY_PARAMS))
    raw["generate"]["difficulty"][key] = value
    with pytest.raises(PairtuneError) as err:
        _run(tmp_path, "bad", raw)
    assert str(err.value).endswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()


def test_summary_written(tmp_path):
    _run(tmp_path, "x")
    summary = json.loads((tmp_path / "x.json").read_text())
    assert summary["train"]["pairs"] == TINY_PARAMS["generate"]["n_train"]
    assert set(summary["overlap"]) >= {"train_eval_pairs", "train_eval_texts"}


def test_tests_use_the_shipped_difficulty():
    from conftest import ROOT

    assert params.load(ROOT / "params.yaml").generate.difficulty == KNOBS
