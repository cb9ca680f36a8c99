"""Every bad-input case: one line naming file, line and problem; exit 2; no traceback; nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import prepare as prepare_stage
import pytest

from conftest import ROOT, TINY_PARAMS, write_params


def _pairs(n, start=0, label=None):
    return [{"text_1": f"I like thing {i}.", "text_2": f"You like thing {i}?", "label": label if label is not None else i % 2,
             "category": "c", "pair_type": "t"} for i in range(start, start + n)]


def _jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


@pytest.fixture
def files(workdir):
    raw = workdir / "data" / "raw"
    raw.mkdir(parents=True)
    _jsonl(raw / "train.jsonl", _pairs(40))
    _jsonl(raw / "dev.jsonl", _pairs(10, 100))
    _jsonl(raw / "eval.jsonl", _pairs(10, 200))
    params = json.loads(json.dumps(TINY_PARAMS))
    params["data"].update(dir="data/raw", train="data/raw/train.jsonl", dev="data/raw/dev.jsonl", eval="data/raw/eval.jsonl")
    write_params(workdir / "params.yaml", params)
    return workdir, params


def _run(capsys):
    with pytest.raises(SystemExit) as ex:
        from pairtune.errors import run_stage

        run_stage(lambda: prepare_stage.main(["--out", "data/prepared", "--summary", "metrics/prepare.json"]))
    err = capsys.readouterr().err.strip().splitlines()
    return ex.value.code, err[-1] if err else ""


def _ok():
    prepare_stage.main(["--out", "data/prepared", "--summary", "metrics/prepare.json"])
    return json.loads(open("metrics/prepare.json").read())


def _assert_failed(capsys, workdir, *needles):
    code, line = _run(capsys)
    assert code == 2
    for needle in needles:
        assert needle in line, line
    assert not (workdir / "data" / "prepared").exists() and not (workdir / "metrics" / "prepare.json").exists()
    return line


def test_good_files(files):
    workdir, _ = files
    summary = _ok()
    assert summary["train"]["pairs"] == 40 and summary["dev_source"] == 1
    rec = json.loads((workdir / "data/prepared/train.jsonl").read_text().splitlines()[0])
    assert set(rec) == {"text_1", "text_2", "label", "category", "pair_type"}


def test_missing_file(files, capsys):
    workdir, _ = files
    (workdir / "data/raw/eval.jsonl").unlink()
    _assert_failed(capsys, workdir, "data/raw/eval.jsonl: file not found")


def test_non_utf8(files, capsys):
    workdir, _ = files
    p = workdir / "data/raw/train.jsonl"
    p.write_bytes(p.read_bytes() + b'{"text_1": "caf\xe9", "text_2": "x", "label": 1}\n')
    _assert_failed(capsys, workdir, "data/raw/train.jsonl:41: not valid UTF-8")


def test_malformed_json(files, capsys):
    workdir, _ = files
    p = workdir / "data/raw/dev.jsonl"
    lines = p.read_text().splitlines()
    lines[2] = lines[2][:-1]
    p.write_text("\n".join(lines) + "\n")
    _assert_failed(capsys, workdir, "data/raw/dev.jsonl:3: malformed JSON")


def test_malformed_json_says_at_once(files, capsys):
    """Regression: "Invalid control character at at column 21" (json's message already ends in "at")."""
    workdir, _ = files
    p = workdir / "data/raw/dev.jsonl"
    lines = p.read_text().splitlines()
    lines[1] = '{"text_1": "tab\there", "text_2": "x", "label": 1}'
    p.write_text("\n".join(lines) + "\n")
    _assert_failed(capsys, workdir, "data/raw/dev.jsonl:2: malformed JSON (Invalid control character at column 16)")


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("text_2", None, "missing field 'text_2'"),
    ("text_1", "   ", "field 'text_1' is empty or not text"),
    ("label", "yes", "label 'yes' is not a number"),
    ("label", float("nan"), "label is nan"),
    ("label", 3, "label 3 is outside [0, 1]"),
    ("label", True, "label true is not a number"),
    ("label", "JSON null", "label null is not a number"),  # JSON's words, not Python's "None"
])
def test_bad_records(files, capsys, field, value, needle):
    workdir, _ = files
    recs = _pairs(40)
    if value is None:
        del recs[4][field]
    else:
        recs[4][field] = None if value == "JSON null" else value
    (workdir / "data/raw/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    _assert_failed(capsys, workdir, f"data/raw/train.jsonl:5: {needle}")


def test_eval_with_one_class(files, capsys):
    workdir, _ = files
    _jsonl(workdir / "data/raw/eval.jsonl", _pairs(10, 200, label=1))
    _assert_failed(capsys, workdir, "data/raw/eval.jsonl", "only positive pairs")


def test_overlap_is_an_error_by_default_and_can_be_dropped(files, capsys):
    workdir, params = files
    recs = _pairs(40) + [dict(_pairs(1, 205)[0], text_1="You like thing 205?", text_2="I like thing 205.")]
    _jsonl(workdir / "data/raw/train.jsonl", recs)  # the same pair as eval line 6, in the other order
    _assert_failed(capsys, workdir, "data/raw/train.jsonl:41: pair also in the eval split (data/raw/eval.jsonl:6)")
    params["prepare"]["on_overlap"] = "drop"
    write_params(workdir / "params.yaml", params)
    summary = _ok()
    assert summary["overlap_dropped"]["train_eval"] == 1 and summary["train"]["pairs"] == 40


def test_duplicates_dropped_and_counted(files, caplog):
    workdir, _ = files
    _jsonl(workdir / "data/raw/train.jsonl", _pairs(40) + _pairs(3))
    summary = _ok()
    assert summary["duplicates_dropped"]["train"] == 3 and summary["train"]["pairs"] == 40
    assert "dropped 3 duplicate" in caplog.text


def test_csv_custom_columns_graded_labels_and_dev_split(files):
    workdir, params = files
    rows = ["question,answer,score"] + [f'"Text, number {i}",Other {i},{i % 6}' for i in range(60)]
    (workdir / "data/raw/sts.csv").write_text("\n".join(rows) + "\n")
    (workdir / "data/raw/sts_eval.tsv").write_text("a\tb\ts\n" + "".join(f"E {i}\tF {i}\t{i % 6}\n" for i in range(12)))
    params["data"].update(train="data/raw/sts.csv", dev="", eval="data/raw/sts_eval.tsv", text_1="question",
                          text_2="answer", label="score", label_max=5.0)
    write_params(workdir / "params.yaml", params)
    with pytest.raises(SystemExit):  # the TSV uses other column names: named in the error
        from pairtune.errors import run_stage

        run_stage(lambda: prepare_stage.main(["--out", "data/prepared", "--summary", "metrics/prepare.json"]))
    (workdir / "data/raw/sts_eval.tsv").write_text("question\tanswer\tscore\n" + "".join(f"E {i}\tF {i}\t{i % 6}\n" for i in range(12)))
    summary = _ok()
    assert summary["dev_source"] == 0 and summary["binary_labels"] == 0
    assert summary["dev"]["pairs"] == 9 and summary["train"]["pairs"] == 51
    recs = [json.loads(x) for x in (workdir / "data/prepared/train.jsonl").read_text().splitlines()]
    assert {r["label"] for r in recs} == {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    assert any(r["text_1"] == "Text, number 0" for r in recs + [json.loads(x) for x in (workdir / "data/prepared/dev.jsonl").read_text().splitlines()])


def test_cli_exit_code_and_no_traceback(files):
    workdir, _ = files
    (workdir / "data/raw/train.jsonl").write_text('{"text_1": "a", "text_2": "b", "label": 1}\nnot json\n')
    proc = subprocess.run([sys.executable, str(ROOT / "stages/prepare.py"), "--out", "data/prepared", "--summary",
                           "metrics/prepare.json"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data/raw/train.jsonl:2: malformed JSON")
    assert not (workdir / "data/prepared").exists()
