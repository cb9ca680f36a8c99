"""A newcomer's own graded pairs, set up exactly as README's snippet says, through the real DVC pipeline.

#34: the snippet sets every data key, the run uses only the user's files (never the demo's dev or eval), and
the demo generator is not upstream of anything the user runs. #37: no word of the demo reaches the report,
the model cards or `pairtune score`.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys

import pytest
from ruamel.yaml import YAML

from conftest import ROOT
from test_pipeline import _template, ran, sh

pytestmark = pytest.mark.pipeline

DEMO_WORDS = re.compile(r"\b(compatible|incompatible|smok\w*|dating|profiles?|dealbreakers?|stance)\b", re.I)
# A question/answer set graded 0-5, worded with words the tiny model knows but none of the demo's subject
TOPICS = ["music", "food", "bread", "coffee", "garden", "football", "film", "book", "bank", "city", "farm", "dog"]


def readme_snippet() -> dict:
    """The YAML block under README's "Bring your own pairs", parsed: what a newcomer copies."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bring your own pairs", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    return YAML(typ="safe").load(block)


def _qa_rows(n: int, start: int, rng: random.Random) -> list[tuple[str, str, int]]:
    rows = []
    for i in range(start, start + n):
        a, b = TOPICS[i % len(TOPICS)], TOPICS[(i // len(TOPICS) + 3) % len(TOPICS)]
        score = rng.randint(0, 5)
        answer_topic = a if score >= 3 else b
        rows.append((f"what is the best {a} in the city number {i}", f"i like the {answer_topic} near home {i}", score))
    return rows


def _csv(path, rows) -> None:
    path.write_text("question,answer,score\n" + "".join(f"{q},{a},{s}\n" for q, a, s in rows), encoding="utf-8")


def test_readme_own_graded_pairs_run_alone_and_speak_no_demo(tmp_path_factory, tiny_model_dir):
    snippet = readme_snippet()
    assert set(snippet) == {"data"}, "README's snippet sets the data keys, nothing else"
    repo = tmp_path_factory.mktemp("own") / "repo"
    shutil.copytree(_template(tmp_path_factory, tiny_model_dir), repo, symlinks=True,
                    ignore=lambda folder, names: {"tmp"} if folder.endswith(".dvc") else set())
    params = YAML(typ="safe").load((repo / "params.yaml").read_text())
    params["data"] = snippet["data"]  # every data key from README, nothing kept from the demo
    YAML().dump(params, repo / "params.yaml")
    rng = random.Random(0)
    (repo / "data/raw").mkdir(parents=True, exist_ok=True)
    data = snippet["data"]
    _csv(repo / data["train"], _qa_rows(160, 0, rng))
    _csv(repo / data["eval"], _qa_rows(60, 1000, rng))
    if data["dev"]:
        _csv(repo / data["dev"], _qa_rows(40, 2000, rng))

    dag = sh(repo, "dvc", "dag", "--dot", "report").stdout
    assert "generate" not in dag  # the demo generator is upstream of nothing the user runs
    shutil.rmtree(repo / "data/demo")  # and the demo's pairs are not read: without them the run still works
    proc = sh(repo, "dvc", "repro", "report", timeout=900)
    assert "generate" not in ran(proc) and "prepare" in ran(proc)
    assert sh(repo, "wc", "-l", "data/prepared/eval.jsonl").stdout.split()[0] == "60"  # the user's eval, all of it

    html = (repo / "plots/report.html").read_text()
    assert "similar" in html and "dissimilar" in html
    assert not DEMO_WORDS.findall(html), sorted(set(DEMO_WORDS.findall(html)))
    for mode in ("full", "lora"):
        card = (repo / f"models/export/{mode}/README.md").read_text()
        assert not DEMO_WORDS.findall(card) and "what is the best" in card  # the example is the user's own pair
    pairs = tmp_path_factory.mktemp("score") / "pairs.csv"
    _csv(pairs, _qa_rows(8, 3000, rng))
    score = sh(repo, sys.executable, "-m", "pairtune.cli", "score", "models/export/lora", "--pairs", str(pairs),
               "--text-1", "question", "--text-2", "answer", "--label", "score", "--label-max", "5")
    two = sh(repo, sys.executable, "-m", "pairtune.cli", "score", "models/export/full", "what is the best coffee",
             "i like the coffee near home")
    for out in (score.stdout + score.stderr, two.stdout + two.stderr):
        assert not DEMO_WORDS.findall(out), out
    assert re.search(r"\b(similar|dissimilar)\b", two.stdout), two.stdout
