"""train.processes: 2 DDP workers through torchrun (gloo on CPU), on the tiny model: full and LoRA finish, write
one model that passes the load guard, match the one-process run closely, and a crashing worker fails the stage
with its own error and leaves nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, write_params
from ruamel.yaml import YAML

from pairtune import metrics, models
from pairtune.data import read_prepared
from pairtune.evaluation import unique_texts

STAGE = str(ROOT / "stages" / "train.py")


def _params(trained, tmp_path, **train):
    raw = YAML(typ="safe").load((trained / "params.yaml").read_text())
    raw["train"].update(train)
    write_params(tmp_path / "params.yaml", raw)
    return tmp_path / "params.yaml"


def _train(trained, tmp_path, mode, params, env=None):
    out = tmp_path / "models" / mode
    cmd = [sys.executable, STAGE, "--mode", mode, "--data", str(trained / "data/prepared"), "--base",
           str(trained / "models/base"), "--out", str(out), "--metrics", str(tmp_path / f"train_{mode}.json"),
           "--live", str(tmp_path / f"live_{mode}"), "--params", str(params)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    return proc, out


def _eval_auc(trained, folder):
    ev = read_prepared(str(trained / "data/prepared/eval.jsonl"))
    texts = unique_texts(ev)
    model = models.load_model(folder, "cpu")  # the guard: adapter merged and probe re-embedded
    s = metrics.pair_scores(models.embed(model, texts), {t: i for i, t in enumerate(texts)}, ev)
    return metrics.auc(s, np.array([p["label"] for p in ev]) >= 0.5)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_two_workers_train_one_model_close_to_one_process(trained, tmp_path, mode):
    params = _params(trained, tmp_path, processes=2)
    proc, out = _train(trained, tmp_path, mode, params)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching 2 DDP workers (gloo)" in proc.stderr
    record = json.loads((tmp_path / f"live_{mode}" / "train.json").read_text())
    one = json.loads((trained / f"dvclive/train_{mode}/train.json").read_text())
    # same recipe: same number of optimizer steps (the global batch is split, not doubled)
    assert record["processes"] == 2 and record["steps"] == one["steps"]
    assert json.loads((tmp_path / f"train_{mode}.json").read_text())[mode]["mb"] > 0
    # rank 0 alone wrote: one curve per logged step, not two
    loss = (tmp_path / f"live_{mode}/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(loss) == len((trained / f"dvclive/train_{mode}/plots/metrics/train/loss.tsv").read_text().splitlines())
    assert not list(out.parent.glob(".*.tmp"))
    two, single = _eval_auc(trained, out), _eval_auc(trained, trained / f"models/{mode}")
    assert abs(two - single) < 0.1, (two, single)  # other data order per worker: close, not identical
    if mode == "full":
        assert "gets no gradient from the sentence embedding: frozen" in proc.stderr  # BERT's pooler


def test_batch_that_does_not_split_is_one_line(trained, tmp_path):
    params = _params(trained, tmp_path, processes=3)
    proc, out = _train(trained, tmp_path, "lora", params)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: params.yaml: train.batch_size: 16 does not split evenly over train.processes 3 workers")
    assert not out.exists()


# Makes worker 1 (only) fail at its second optimizer step, after the process group is up: rank 0 is then
# blocked in an all-reduce and torchrun has to stop it.
_CRASH = """
import os
if os.environ.get("RANK") == "1":
    import transformers
    _step = transformers.Trainer.training_step
    def training_step(self, *args, **kwargs):
        if self.state.global_step >= 1:
            raise RuntimeError("worker crash for the test")
        return _step(self, *args, **kwargs)
    transformers.Trainer.training_step = training_step
"""


def test_a_crashing_worker_fails_the_stage_with_its_error(trained, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_CRASH)
    params = _params(trained, tmp_path, processes=2)
    proc, out = _train(trained, tmp_path, "full", params, env={"PYTHONPATH": os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: train: a DDP worker failed (2 workers), rank1: RuntimeError: worker crash for the test")
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))  # nothing half-written
    assert not (tmp_path / "train_full.json").exists()
