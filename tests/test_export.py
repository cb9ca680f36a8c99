"""The export stage and the `pairtune` command, on the tiny model (one slow test on the real one)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pairtune import cli, export, models
from conftest import write_params

ORDER = ("standalone_max_abs", "onnx_cosine_max_abs", "int8_auc_delta", "int8_spearman_delta")


def _run_export(root: Path, mode: str, out: str, metrics: str, params: str = "params.yaml") -> None:
    import export as export_stage  # stages/export.py

    evaluate = root / f"metrics/evaluate_card_{mode}.json"
    evaluate.write_text(json.dumps({"metrics": {"auc": 0.9, "auc_ci_low": 0.85, "auc_ci_high": 0.95, "spearman": 0.7}}))
    export_stage.main(["--model", str(root / f"models/{mode}"), "--data", str(root / "data/prepared"),
                       "--evaluate", str(evaluate), "--out", str(root / out), "--metrics", str(root / metrics),
                       "--params", str(root / params)])


@pytest.fixture(scope="module")
def exported(trained):
    """models/export/{full,lora} and metrics/export/*.json in the shared tiny training folder."""
    for mode in ("full", "lora"):
        _run_export(trained, mode, f"models/export/{mode}", f"metrics/export/{mode}.json")
    return trained


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_export_folder_has_every_artefact_and_records_parity(exported, mode):
    folder = exported / f"models/export/{mode}"
    for name in ("model.safetensors", "modules.json", "tokenizer.json", export.ONNX_FP32, export.ONNX_INT8,
                 export.SPEC, "README.md", models.MANIFEST, models.PROBE):
        assert (folder / name).is_file(), name
    assert not (folder / models.ADAPTER_WEIGHTS).exists()  # LoRA is merged, not shipped as an adapter
    manifest = json.loads((folder / models.MANIFEST).read_text())
    assert manifest["mode"] == "export" and manifest["source_mode"] == mode
    m = json.loads((exported / f"metrics/export/{mode}.json").read_text())
    assert m["threshold"] == manifest["threshold"] and m["threshold_int8"] == manifest["threshold_int8"]
    assert m["standalone_max_abs"] <= 1e-5 and m["onnx_cosine_max_abs"] <= 1e-4
    assert m["standalone_texts"] == 20  # export.parity_texts: a sample of the dev + eval texts
    assert m["bytes_int8"] < m["bytes_onnx"]
    card = (folder / "README.md").read_text()
    assert f"pairtune export: {mode}" in card and "0.9000 [0.8500, 0.9500]" in card and str(exported) not in card


@pytest.fixture(scope="module")
def site_without_pairtune_or_peft(tmp_path_factory) -> Path:
    """A site-packages view with every installed package but pairtune and peft (links, no copies)."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    view = tmp_path_factory.mktemp("site")
    for entry in site.iterdir():
        name = entry.name.lower()
        if "pairtune" in name or name.startswith("peft") or entry.suffix == ".pth":
            continue
        (view / entry.name).symlink_to(entry)
    return view


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_standalone_folder_loads_without_pairtune_or_peft(exported, mode, site_without_pairtune_or_peft):
    """Plain `SentenceTransformer(path)` in a Python where pairtune and peft are not installed."""
    folder = exported / f"models/export/{mode}"
    code = f"""
import importlib.util, json
import numpy as np
assert importlib.util.find_spec("peft") is None and importlib.util.find_spec("pairtune") is None
from sentence_transformers import SentenceTransformer
m = SentenceTransformer({str(folder)!r}, device="cpu")
texts = json.load(open({str(folder / models.PROBE_TEXTS)!r}))
emb = m.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
print(float(np.max(np.abs(emb - np.load({str(folder / models.PROBE)!r})))))
"""
    # -S: no site-packages (and no .pth hooks such as pairtune's editable install); PYTHONPATH: the view
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=False, timeout=180,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(site_without_pairtune_or_peft)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_onnx_fp32_matches_the_pipeline_model(exported, mode):
    folder = exported / f"models/export/{mode}"
    texts = json.loads((folder / models.PROBE_TEXTS).read_text())
    stored = np.load(folder / models.PROBE)
    onnx = export.OnnxEncoder.load(folder).encode(texts, batch_size=5)  # odd batch: padding differs per batch
    assert np.max(np.abs(onnx - stored)) <= 1e-5
    int8 = export.OnnxEncoder.load(folder, export.ONNX_INT8).encode(texts)
    assert 0 < np.max(np.abs(int8 - stored)) < 0.5  # quantised: close, not equal


def test_onnx_embeddings_do_not_depend_on_their_batch(exported):
    """ONNX fp32 in batches of one token length: a text's row is the same bits alone, in a sample or in the
    whole set. Dynamic int8 takes its activation range from the whole input, so its graph runs a text at a
    time (per_text) and is invariant too; batched, the same int8 graph is not (the control)."""
    import random

    folder = exported / "models/export/full"
    texts = sorted(json.loads((folder / models.PROBE_TEXTS).read_text()) + ["one text of a length of its own " * 3])
    cases = [([texts[0]], 64), (texts[::-1], 2), (random.Random(0).sample(texts, 7), 3)]
    for file in (export.ONNX_FP32, export.ONNX_INT8):
        enc = export.OnnxEncoder.load(folder, file)
        assert enc.per_text == (file == export.ONNX_INT8 and "dynamic" in
                                json.loads((folder / models.MANIFEST).read_text())["int8_method"])
        whole = dict(zip(texts, enc.encode(texts), strict=True))
        for subset, bs in cases:
            assert np.array_equal(enc.encode(subset, bs), np.stack([whole[t] for t in subset])), (file, bs)
    enc = export.OnnxEncoder.load(folder, export.ONNX_INT8)
    if enc.per_text:
        enc.per_text = False
        batched = dict(zip(texts, enc.encode(texts), strict=True))
        assert not all(np.array_equal(enc.encode([t, t])[0], batched[t]) for t in texts)


def test_onnx_carries_no_stack_traces_or_paths(exported):
    """The exporter's per-node stack traces named this checkout's absolute paths and export.py's line numbers:
    the same graph hashed differently in another clone (#23). They are stripped."""
    import onnx

    for mode in ("full", "lora"):
        raw = (exported / f"models/export/{mode}" / export.ONNX_FP32).read_bytes()
        assert b"stack_trace" not in raw and sys.prefix.encode() not in raw and str(Path.cwd()).encode() not in raw
        graph = onnx.load_from_string(raw).graph
        assert graph.node and not any(n.metadata_props for n in graph.node)


def test_export_is_byte_identical_on_a_rerun(exported):
    _run_export(exported, "lora", "models/export_again/lora", "metrics/export_again.json")
    assert _digests(exported / "models/export_again/lora") == _digests(exported / "models/export/lora")
    assert (exported / "metrics/export_again.json").read_bytes() == (exported / "metrics/export/lora.json").read_bytes()


def test_a_parity_gap_fails_the_stage_and_writes_nothing(exported, capsys):
    params = json.loads(json.dumps(__import__("conftest").TINY_PARAMS))
    params["base"]["model"] = "unused"
    params["export"]["embed_atol"] = -1.0  # never met: the standalone gap is >= 0
    write_params(exported / "strict.yaml", params)
    with pytest.raises(SystemExit) as exc:
        from pairtune.errors import run_stage

        run_stage(lambda: _run_export(exported, "full", "models/strict/full", "metrics/strict.json", "strict.yaml"))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # the standalone folder is the export itself: a gap there fails the stage whatever export.strict says
    assert err.startswith("error: export parity failed: standalone: embedding max |delta| 0 > embed_atol -1")
    assert not (exported / "models/strict/full").exists() and not (exported / "metrics/strict.json").exists()
    assert not list((exported / "models/strict").glob(".*.tmp"))


def test_the_export_passes_the_guard_and_a_tampered_one_does_not(exported, tmp_path):
    models.load_model(exported / "models/export/lora")
    bad = tmp_path / "bad"
    shutil.copytree(exported / "models/export/lora", bad)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(bad / "model.safetensors"))
    key = next(k for k in weights if "query.weight" in k)
    weights[key] = weights[key] * 0.5
    save_file(weights, str(bad / "model.safetensors"))
    with pytest.raises(models.GuardError, match="does not reproduce its stored probe"):
        models.load_model(bad)


# --- the `pairtune` command ---------------------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_documented_commands_run(exported, tmp_path):
    """#34: README's and docs/export.md's `pairtune` lines and export.md's two Python snippets, run as written
    (bash -e; `.venv` is the test's venv) in a folder holding the tiny run's models and the files they name."""
    import csv
    import os

    from conftest import doc_blocks

    work = tmp_path / "reader"
    (work / "data/raw").mkdir(parents=True)
    (work / "models").symlink_to(exported / "models")
    (work / ".venv").symlink_to(Path(sys.prefix))
    rows = [("i smoke every day .", "i would never date a smoker .", 0), ("i love hiking .", "i hike a lot .", 5),
            ("i am vegan .", "i eat meat daily .", 1), ("i read books .", "i love reading .", 4)]
    with (work / "data/raw/my_eval.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("question", "answer", "score"), *rows])
    with (work / "my_pairs.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("text_1", "text_2", "label"), *((a, b, int(y >= 3)) for a, b, y in rows)])
    (work / "sentences.txt").write_text("i smoke every day .\ni love hiking .\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    blocks = doc_blocks("tests/test_export.py::test_the_documented_commands_run")
    shell = [b for b in blocks if "pairtune score" in b]
    snippets = [b for b in blocks if b not in shell]
    assert len(shell) == 2 and len(snippets) == 2
    for block in shell:
        proc = subprocess.run(["bash", "-ec", block], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (block, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "-> " in proc.stdout and "pairs scored" in proc.stderr
        scored = list(csv.DictReader((work / "scores.csv").open()))
        assert len(scored) == len(rows) and {"cosine", "decision"} <= set(scored[0])
    assert np.load(work / "emb.npy").shape[0] == 2
    for code in snippets:
        proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, (code, proc.stderr[-2000:])
        assert -1.0 <= float(proc.stdout.split()[-1]) <= 1.0  # the cosine it prints


def test_score_two_texts_prints_cosine_and_decision(exported, capsys):
    folder = str(exported / "models/export/lora")
    manifest = json.loads((Path(folder) / models.MANIFEST).read_text())
    code, out, _ = _cli(capsys, "score", folder, "i smoke every day .", "i would never date a smoker .")
    assert code == 0
    cos, said = float(out.split()[1]), out.split("-> ")[1].split(" (")[0]
    want = "compatible" if cos >= manifest["threshold"] else "incompatible"
    # the printed cosine is rounded to 4 places: at the threshold itself only the unrounded value decides
    assert said == want or abs(cos - manifest["threshold"]) <= 5e-5
    assert out.startswith("cosine ") and f"-> {said} (threshold {manifest['threshold']:.4f}, onnx)" in out
    code, out, _ = _cli(capsys, "score", folder, "i smoke every day .", "i would never date a smoker .",
                        "--backend", "torch")
    assert code == 0 and abs(float(out.split()[1]) - cos) <= 1e-4 and "torch" in out
    code, out, _ = _cli(capsys, "score", folder, "a", "b", "--backend", "int8")
    assert f"threshold {manifest['threshold_int8']:.4f}, int8" in out
    code, out, _ = _cli(capsys, "score", str(exported / "models/lora"), "a", "b")
    assert code == 0 and "no decision" in out  # a pipeline folder has no dev threshold
    code, out, _ = _cli(capsys, "score", str(exported / "models/lora"), "a", "b", "--threshold", "-1")
    assert code == 0 and "-> positive" in out


def test_score_a_pair_file(exported, capsys, tmp_path):
    folder = str(exported / "models/export/full")
    pairs = exported / "data/prepared/eval.jsonl"
    code, out, err = _cli(capsys, "score", folder, "--pairs", str(pairs))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    n = len(pairs.read_text().splitlines())
    assert len(rows) == n and {"text_1", "text_2", "cosine", "decision", "label"} <= set(rows[0])
    assert f"{n} pairs scored (onnx); AUC" in err
    csv_out = tmp_path / "scores.csv"
    code, _, _ = _cli(capsys, "score", folder, "--pairs", str(pairs), "--out", str(csv_out), "--backend", "torch")
    lines = csv_out.read_text().splitlines()
    assert code == 0 and lines[0] == "text_1,text_2,cosine,decision,label" and len(lines) == n + 1
    torch_cos = [float(line.rsplit(",", 3)[1]) for line in lines[1:]]
    assert np.max(np.abs(np.array(torch_cos) - [r["cosine"] for r in rows])) <= 1e-4
    unlabelled = tmp_path / "u.tsv"
    unlabelled.write_text("a\tb\ni like dogs .\ti love dogs .\n")
    code, out, err = _cli(capsys, "score", folder, "--pairs", str(unlabelled), "--text-1", "a", "--text-2", "b",
                          "--format", "tsv")
    assert code == 0 and out.splitlines()[0] == "a\tb\tcosine\tdecision" and "AUC" not in err


def test_a_scored_file_keeps_the_users_columns_and_label_scale(exported, capsys, tmp_path):
    """Scores line up with the file they came from: its column names and its 0-5 labels, not text_1/label in
    [0, 1] (a user joining the output back on their columns found them renamed)."""
    graded = tmp_path / "qa.csv"
    graded.write_text("question,answer,score\ni like dogs .,i love dogs .,5\ni smoke .,i hate smoke .,0\n"
                      "i run .,i jog .,3.5\n")
    out_csv = tmp_path / "scored.csv"
    code, _, err = _cli(capsys, "score", str(exported / "models/export/full"), "--pairs", str(graded), "--out",
                        str(out_csv), "--text-1", "question", "--text-2", "answer", "--label", "score",
                        "--label-max", "5")
    lines = out_csv.read_text().splitlines()
    assert code == 0 and lines[0] == "question,answer,cosine,decision,score", (lines, err)
    assert [line.split(",")[0] for line in lines[1:]] == ["i like dogs .", "i smoke .", "i run ."]
    assert [line.rsplit(",", 1)[1] for line in lines[1:]] == ["5", "0", "3.5"]


def test_embed_writes_a_matrix(exported, capsys, tmp_path):
    folder = exported / "models/export/lora"
    texts = json.loads((folder / models.PROBE_TEXTS).read_text())
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "emb.npy"
    code, _, err = _cli(capsys, "embed", str(folder), "--texts", str(src), "--out", str(out))
    assert code == 0 and f"{len(texts)} texts" in err
    assert np.max(np.abs(np.load(out) - np.load(folder / models.PROBE))) <= 1e-5
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence": t}) + "\n" for t in texts[:3]))
    code, _, _ = _cli(capsys, "embed", str(folder), "--texts", str(jsonl), "--field", "sentence", "--out", str(out),
                      "--backend", "int8")
    assert code == 0 and np.load(out).shape == (3, 32)


@pytest.mark.parametrize(("argv", "message"), [
    (("score", "{tmp}/nowhere", "a", "b"), "{tmp}/nowhere: no such model folder"),
    (("score", "{tmp}", "a", "b"), "{tmp}: not a pairtune model, export or SentenceTransformer folder"),
    (("score", "{lora}", "a", "b", "--backend", "onnx"), "--backend onnx needs an export folder"),
    (("score", "{export}", "a"), "score: expected two texts (or --pairs FILE), got 1"),
    (("score", "{export}", "a", " "), "score: a text is empty"),
    (("score", "{export}", "--pairs", "{tmp}/bad.jsonl"), "{tmp}/bad.jsonl:2: missing field 'text_2'"),
    (("score", "{export}", "--pairs", "{tmp}/missing.jsonl"), "{tmp}/missing.jsonl: file not found"),
    (("score", "{export}", "--pairs", "{tmp}/ok.jsonl", "--out", "{tmp}/x.parquet"), "cannot tell the output format"),
    (("embed", "{export}", "--texts", "{tmp}/t.txt", "--out", "{tmp}/e.csv"), "--out must end in .npy"),
    (("embed", "{export}", "--texts", "{tmp}/t.txt", "--out", "{tmp}/e.npy"), "{tmp}/t.txt:2: line is empty"),
    (("score", "{export}", "--pairs", "{tmp}/short.tsv"), "{tmp}/short.tsv:3: fewer fields than the header has"),
])
def test_bad_input_is_one_line_and_exit_2(exported, capsys, tmp_path, argv, message):
    (tmp_path / "bad.jsonl").write_text('{"text_1": "a", "text_2": "b"}\n{"text_1": "a"}\n')
    (tmp_path / "ok.jsonl").write_text('{"text_1": "a", "text_2": "b"}\n')
    (tmp_path / "t.txt").write_text("one\n\nthree\n")
    (tmp_path / "short.tsv").write_text("text_1\ttext_2\na\tb\nc\n")
    fill = {"tmp": str(tmp_path), "lora": str(exported / "models/lora"), "export": str(exported / "models/export/lora")}
    code, out, err = _cli(capsys, *(a.format(**fill) for a in argv))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("pairtune: error: ") and message.format(**fill) in err
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "e.npy").exists()


def test_console_script_starts_fast_and_helps(exported):
    """The installed `pairtune` entry point: --help names the commands; ONNX scoring never imports torch."""
    exe = Path(sys.executable).parent / "pairtune"
    assert exe.exists(), "pairtune is not installed as a console script (pip install -e .)"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0 and "score" in proc.stdout and "embed" in proc.stdout
    code = (f"import sys; from pairtune import cli; rc = cli.main(['score', {str(exported / 'models/export/lora')!r},"
            " 'a', 'b']); assert rc == 0; assert 'torch' not in sys.modules and 'sentence_transformers' not in "
            "sys.modules, 'heavy import on the ONNX path'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([str(exe), "score", "/nonexistent", "a", "b"], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_int8_keeps_quality_on_the_real_model(tmp_path, monkeypatch):
    """all-MiniLM-L6-v2 fine-tuned briefly on the demo data, then exported by the stage with the shipped
    tolerances: int8 eval AUC within 0.005 and Spearman within 0.01 of fp32 (the stage fails otherwise)."""
    import base as base_stage
    import generate as generate_stage
    import prepare as prepare_stage
    import train as train_stage
    from ruamel.yaml import YAML

    root = Path(__file__).resolve().parents[1]
    params = YAML(typ="safe").load((root / "params.yaml").read_text())
    params["generate"].update(n_train=400, n_dev=295, n_eval=295)
    # the easy data (every difficulty knob 0): two epochs on 400 pairs then give a clearly tuned model, which
    # is what int8 has to preserve; the shipped difficulty needs the full recipe for that
    params["generate"]["difficulty"] = dict.fromkeys(params["generate"]["difficulty"], 0.0)
    params["train"].update(epochs=2, warmup_steps=5)
    params["train"]["full"]["lr"] = 2e-5  # the original recipe: no learning-rate search in this test
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", params)
    generate_stage.main(["--out", "data/demo", "--summary", "metrics/generate.json"])
    prepare_stage.main(["--out", "data/prepared", "--summary", "metrics/prepare.json"])
    base_stage.main(["--data", "data/prepared", "--out", "models/base"])
    train_stage.main(["--mode", "full", "--data", "data/prepared", "--base", "models/base", "--out", "models/full",
                      "--metrics", "metrics/train/full.json", "--live", "dvclive/train_full"])
    _run_export(tmp_path, "full", "models/export/full", "metrics/export/full.json")
    m = json.loads((tmp_path / "metrics/export/full.json").read_text())
    assert m["onnx_auc"] > 0.6  # it ranks the right way round: tuned, not the inverted base (AUC ~0.2)
    assert m["int8_auc_delta"] <= 0.005 and m["int8_spearman_delta"] <= 0.01
    assert m["onnx_cosine_max_abs"] <= 1e-4 and m["standalone_max_abs"] <= 1e-5
    # under 40% of fp32: dynamic is 25%, dynamic_ffn_fp32 37% (auto keeps the latter when dynamic, run one text
    # at a time as a user scores, moves dev by over half the tolerance: it did on this model, 0.0029 dev AUC)
    assert m["int8_method"] in export.AUTO_INT8 and m["bytes_int8"] < 0.4 * m["bytes_onnx"]


def test_a_corrupt_onnx_file_is_one_line_not_a_traceback(exported, capsys, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(exported / "models/export/lora", bad)
    (bad / export.ONNX_FP32).write_bytes(b"not an onnx graph")
    code, out, err = _cli(capsys, "score", str(bad), "a", "b")
    assert code == 1 and out == "" and err.count("\n") == 1 and err.startswith("pairtune: error: ")
    assert "Traceback" not in err


def test_pooling_outside_pytorch():
    """The pooling modes OnnxEncoder applies, and both spellings of a pooling config."""
    tokens = np.array([[[1.0, 5.0], [3.0, -1.0], [100.0, 100.0]]], dtype=np.float32)  # last token is padding
    mask = np.array([[1, 1, 0]])
    assert np.allclose(export._pool(tokens, mask, "mean"), [[2.0, 2.0]])
    assert np.allclose(export._pool(tokens, mask, "max"), [[3.0, 5.0]])
    assert np.allclose(export._pool(tokens, mask, "cls"), [[1.0, 5.0]])
    assert export._pooling_mode({"pooling_mode": "mean"}) == "mean"
    assert export._pooling_mode({"pooling_mode_cls_token": False, "pooling_mode_max_tokens": True}) == "max"
    assert export._pooling_mode({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}) == "cls"
    with pytest.raises(export.ExportError, match="only mean, cls or max"):
        export._pooling_mode({"pooling_mode": "lasttoken"})


# --- an int8 variant that misses its tolerance (#21) ----------------------------------------------------------


def _spoiled_for_int8(trained: Path, dst: Path) -> Path:
    """The tiny models/full with weights no 8-bit code holds: in every weight matrix one input row in 16
    scaled 1000x (a per-channel or per-block scale set by it rounds the rest of the row to 0), and one
    channel of the embedding LayerNorm scaled 1000x (a per-tensor activation scale set by it does the same
    to the other channels). fp32 still computes it exactly; only int8 loses it."""
    import torch

    model = models.load_model(trained / "models/full")
    with torch.no_grad():
        for name, p in model[0].model.named_parameters():
            if p.ndim == 2 and "embeddings" not in name:
                p[:, ::16] *= 1000.0  # nn.Linear weight is (out, in)
        model[0].model.embeddings.LayerNorm.weight[0] *= 1000.0
    models.save_full(model, dst)
    texts = json.loads((trained / "models/full" / models.PROBE_TEXTS).read_text())
    models.write_fingerprint(dst, models.read_manifest(trained / "models/full"), texts,
                             models.embed_probe(model, texts), np.load(trained / "models/full" / models.BASE_PROBE))
    return dst


def _params_with(root: Path, name: str, **export_keys) -> str:
    params = json.loads(json.dumps(__import__("conftest").TINY_PARAMS))
    params["base"]["model"] = "unused"
    params["export"].update({"int8_auc_tol": 0.01, "int8_spearman_tol": 0.01, **export_keys})
    write_params(root / name, params)
    return name


@pytest.fixture(scope="module")
def spoiled(exported):
    """models/spoiled (int8 cannot hold it) exported with the shipped int8 tolerances, strict off."""
    _spoiled_for_int8(exported, exported / "models/spoiled")
    shutil.copytree(exported / "models/spoiled", exported / "models/spoiled_src")
    params = _params_with(exported, "spoiled.yaml")
    _run_export(exported, "spoiled", "models/export/spoiled", "metrics/export_spoiled.json", params)
    return exported


def test_an_int8_over_tolerance_is_left_out_and_the_stage_succeeds(spoiled):
    folder = spoiled / "models/export/spoiled"
    m = json.loads((spoiled / "metrics/export_spoiled.json").read_text())
    assert m["status"]["standalone"] == "ok" and m["status"]["onnx"] == "ok"
    assert m["status"]["int8"].startswith("refused: ")
    assert "> int8_auc_tol 0.01" in m["status"]["int8"] or "> int8_spearman_tol 0.01" in m["status"]["int8"]
    assert m["int8_auc_delta"] > 0.01 or m["int8_spearman_delta"] > 0.01  # the reason is real, not asserted
    assert not (folder / export.ONNX_INT8).exists() and "bytes_int8" not in m and "threshold_int8" not in m
    assert (folder / export.ONNX_FP32).is_file() and (folder / "model.safetensors").is_file()
    manifest = json.loads((folder / models.MANIFEST).read_text())
    assert manifest["variants"] == m["status"] and "threshold_int8" not in manifest
    card = (folder / "README.md").read_text()
    assert f"`{export.ONNX_INT8}`: not shipped (refused: " in card
    models.load_model(folder)  # what was shipped passes the guard


def test_pairtune_falls_back_from_a_refused_int8_with_one_line(spoiled, capsys):
    folder = str(spoiled / "models/export/spoiled")
    code, out, err = _cli(capsys, "score", folder, "i smoke every day .", "i would never date a smoker .",
                          "--backend", "int8")
    assert code == 0 and out.rstrip().endswith(", onnx)")  # scored with ONNX fp32, and says so
    assert err.count("\n") == 1 and err.startswith("pairtune: int8 refused: ") and "using ONNX fp32" in err
    code, out, err = _cli(capsys, "score", folder, "a", "b")  # auto: ONNX fp32 was shipped, nothing to say
    assert code == 0 and err == "" and out.rstrip().endswith(", onnx)")


def test_strict_export_fails_on_a_refused_int8_and_writes_nothing(spoiled, capsys):
    from pairtune.errors import run_stage

    params = _params_with(spoiled, "strict_int8.yaml", strict=True)
    with pytest.raises(SystemExit) as exc:
        run_stage(lambda: _run_export(spoiled, "spoiled", "models/strict/spoiled", "metrics/strict_spoiled.json",
                                      params))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: export parity failed: int8: eval ")
    assert not (spoiled / "models/strict/spoiled").exists() and not (spoiled / "metrics/strict_spoiled.json").exists()


def test_the_torchscript_exporter_is_tried_first_and_matches_pytorch(exported):
    for mode in ("full", "lora"):
        m = json.loads((exported / f"metrics/export/{mode}.json").read_text())
        assert m["onnx_exporter"] == "torchscript" and m["status"]["onnx"] == "ok"
        assert m["onnx_cosine_max_abs"] <= 1e-4


def test_auto_falls_back_to_the_dynamo_exporter(exported, monkeypatch, caplog):
    """A model the TorchScript tracer cannot take still gets its ONNX file, through torch.export."""
    caplog.set_level(logging.INFO, logger="pairtune.export")
    real = export.export_onnx

    def no_tracing(model, path, opset, exporter="dynamo"):
        if exporter == "torchscript":
            raise RuntimeError("cannot trace this")
        real(model, path, opset, exporter)

    monkeypatch.setattr(export, "export_onnx", no_tracing)
    _run_export(exported, "lora", "models/export_dynamo/lora", "metrics/export_dynamo.json")
    m = json.loads((exported / "metrics/export_dynamo.json").read_text())
    assert m["onnx_exporter"] == "dynamo" and m["status"] == {"standalone": "ok", "onnx": "ok", "int8": "ok"}
    assert m["onnx_cosine_max_abs"] <= 1e-4
    assert "ONNX through torchscript failed: RuntimeError: cannot trace this" in caplog.text


def test_export_reuses_evaluates_embeddings_byte_for_byte(exported, caplog):
    """Export's parity reference is evaluate's encode of the same texts where its key matches: the outputs are
    the bytes of an export that encodes them itself (the `exported` fixture's), and a mismatched key is
    ignored (the export encodes again)."""
    import evaluate as evaluate_stage  # stages/evaluate.py
    import export as export_stage

    plots = exported / "plots/evaluate_reuse_lora"
    evaluate_stage.main(["--model", str(exported / "models/lora"), "--data", str(exported / "data/prepared"),
                         "--metrics", str(exported / "metrics/evaluate_reuse.json"), "--plots", str(plots),
                         "--params", str(exported / "params.yaml")])
    for tag in ("reused", "mismatched"):
        if tag == "mismatched":
            key = json.loads((plots / "embeddings.json").read_text())
            (plots / "embeddings.json").write_text(json.dumps({**key, "key": "0" * 64}))
        caplog.clear()
        caplog.set_level(logging.INFO)
        export_stage.main(["--model", str(exported / "models/lora"), "--data", str(exported / "data/prepared"),
                           "--evaluate", str(plots / "details.json"), "--out", str(exported / f"models/export_{tag}"),
                           "--metrics", str(exported / f"metrics/export_{tag}.json"),
                           "--params", str(exported / "params.yaml")])
        assert ("reference embeddings: " in caplog.text) == (tag == "reused")
        assert ("encoding again" in caplog.text) == (tag == "mismatched")
        ours = json.loads((exported / f"metrics/export_{tag}.json").read_text())
        plain = json.loads((exported / "metrics/export/lora.json").read_text())
        assert ours == plain
        mine, theirs = _digests(exported / f"models/export_{tag}"), _digests(exported / "models/export/lora")
        mine.pop("README.md"), theirs.pop("README.md")  # the card quotes evaluate's (here: real) eval metrics
        assert mine == theirs


def test_an_onnx_export_that_fails_keeps_the_standalone_folder(exported, monkeypatch):
    """An architecture the ONNX exporter cannot take costs ONNX and int8, not the stage."""
    def broken(*args, **kwargs):
        raise KeyError("token_type_ids")

    monkeypatch.setattr(export, "export_onnx", broken)
    _run_export(exported, "full", "models/export_noonnx/full", "metrics/export_noonnx.json")
    m = json.loads((exported / "metrics/export_noonnx.json").read_text())
    assert m["status"] == {"standalone": "ok", "onnx": "failed: KeyError: 'token_type_ids'",
                           "int8": "skipped: no ONNX fp32 to quantise"}
    folder = exported / "models/export_noonnx/full"
    assert (folder / "model.safetensors").is_file() and not (folder / "onnx").exists()


def test_pairtune_uses_pytorch_when_no_onnx_was_shipped(exported, capsys, monkeypatch):
    folder = exported / "models/export_noonnx/full"
    if not folder.exists():
        test_an_onnx_export_that_fails_keeps_the_standalone_folder(exported, monkeypatch)
    code, out, err = _cli(capsys, "score", str(folder), "a", "b")
    assert code == 0 and out.rstrip().endswith(", torch)")
    assert err.count("\n") == 1 and err.startswith("pairtune: ONNX fp32 failed: KeyError") and "using PyTorch" in err


def test_auto_int8_keeps_the_fastest_method_that_holds_on_dev(exported):
    """int8_method auto: dynamic on the tiny LoRA when it holds on dev; every method is tried, and the closest
    on dev kept, when none does (the spoiled model), and the eval check then refuses it."""
    m = json.loads((exported / "metrics/export/lora.json").read_text())
    assert m["int8_method"] == "dynamic" and list(m["int8_tried"]) == ["dynamic"]  # tiny params: int8_method dynamic
    params = _params_with(exported, "auto_int8.yaml", int8_method="auto", int8_auc_tol=0.2, int8_spearman_tol=0.2)
    _run_export(exported, "lora", "models/export_auto/lora", "metrics/export_auto.json", params)
    m = json.loads((exported / "metrics/export_auto.json").read_text())
    tried = m["int8_tried"]
    assert m["int8_method"] == list(tried)[-1] and m["status"]["int8"] == "ok"
    first = tried["dynamic"]
    assert (list(tried) == ["dynamic"]) == (max(first["auc"] / 0.2, first["spearman"] / 0.2) <= export.DEV_MARGIN)
    manifest = json.loads((exported / "models/export_auto/lora" / models.MANIFEST).read_text())
    assert manifest["int8_method"] == m["int8_method"]


def test_auto_int8_tries_every_method_when_none_is_within_the_margin_on_dev(spoiled):
    """auto keeps the first method within DEV_MARGIN of the tolerances on dev; on the spoiled model with
    tolerances of 0.002/0.004 no method is (a dev AUC step on 48 tiny pairs is 1/576 = 0.0017, and every
    method moves at least one pair), so each is tried, the closest is kept, and the eval check refuses it.
    (With the shipped 0.01, one text a run lets dynamic through on dev by one pair while eval refuses it:
    a tiny model's dev deltas are too coarse to rest this test on.)"""
    params = _params_with(spoiled, "spoiled_auto.yaml", int8_method="auto", int8_auc_tol=0.002,
                          int8_spearman_tol=0.004)
    _run_export(spoiled, "spoiled", "models/export_spoiled_auto", "metrics/export_spoiled_auto.json", params)
    m = json.loads((spoiled / "metrics/export_spoiled_auto.json").read_text())
    assert list(m["int8_tried"]) == list(export.AUTO_INT8)
    closest = min(m["int8_tried"], key=lambda k: max(m["int8_tried"][k]["auc"], m["int8_tried"][k]["spearman"] / 2))
    assert m["int8_method"] == closest and m["status"]["int8"].startswith("refused: ")


def test_a_zero_int8_tolerance_refuses_rather_than_crashes(exported):
    """int8_auc_tol 0 admits only a delta of exactly 0: auto tries every method and the eval check refuses
    (found by `dvc repro` with the tolerance at 0: the dev check divided by it)."""
    params = _params_with(exported, "zero_tol.yaml", int8_method="auto", int8_auc_tol=0.0, int8_spearman_tol=0.0)
    _run_export(exported, "lora", "models/export_zero/lora", "metrics/export_zero.json", params)
    m = json.loads((exported / "metrics/export_zero.json").read_text())
    assert not m["status"]["int8"].startswith("failed")
    exact = m.get("int8_auc_delta") == 0 and m.get("int8_spearman_delta") == 0
    assert m["status"]["int8"] == "ok" if exact else m["status"]["int8"].startswith("refused: ")
