"""CUDA: the code paths only a GPU runs. Skipped without one (CI has none); `bash bench/gpu.sh` runs them.

Training both modes on the tiny model and (slow) on the real one, the load guard across devices (probes are
always checked on the CPU), DDP over NCCL with two GPUs, and the export of a CUDA-trained model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_demo_data, write_params
from ruamel.yaml import YAML

from pairtune import models

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (bash bench/gpu.sh on a GPU)")]


def _train(root, tmp_path, mode, **train):
    raw = YAML(typ="safe").load((root / "params.yaml").read_text())
    raw["train"].update({"device": "cuda", **train})
    write_params(tmp_path / "params.yaml", raw)
    out = tmp_path / mode
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py"), "--mode", mode, "--data",
                           str(root / "data/prepared"), "--base", str(root / "models/base"), "--out", str(out),
                           "--metrics", str(tmp_path / f"train_{mode}.json"), "--live", str(tmp_path / f"live_{mode}"),
                           "--params", str(tmp_path / "params.yaml")], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((tmp_path / f"live_{mode}" / "train.json").read_text())


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_tiny_model_trains_on_cuda_and_passes_the_guard_on_both_devices(trained, tmp_path, mode):
    out, record = _train(trained, tmp_path, mode)
    assert record["device_cuda"] == 1
    on_cpu = models.embed(models.load_model(out, "cpu"), ["a man is eating food", "hello world"])
    on_gpu = models.embed(models.load_model(out, "cuda"), ["a man is eating food", "hello world"])
    assert np.max(np.abs(on_cpu - on_gpu)) < 1e-3  # kernels differ; the model does not


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_cuda_trained_model_exports_with_parity(trained, tmp_path, mode):
    out, _ = _train(trained, tmp_path, mode)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    data, params = str(trained / "data/prepared"), str(tmp_path / "params.yaml")
    subprocess.run([sys.executable, str(ROOT / "stages/evaluate.py"), "--model", str(out), "--data", data,
                    "--metrics", str(tmp_path / "evaluate.json"), "--plots", str(tmp_path / "plots"), "--params",
                    params], check=True, capture_output=True, text=True, timeout=900, env=env)
    subprocess.run([sys.executable, str(ROOT / "stages/export.py"), "--model", str(out), "--data", data,
                    "--evaluate", str(tmp_path / "plots/details.json"), "--out", str(tmp_path / "export"),
                    "--metrics", str(tmp_path / "export.json"), "--params", params],
                   check=True, capture_output=True, text=True, timeout=900, env=env)
    status = json.loads((tmp_path / "export.json").read_text())["status"]
    assert status["standalone"] == "ok" and status["onnx"] == "ok", status


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs two GPUs")
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ddp_over_nccl_on_two_gpus(trained, tmp_path, mode):
    out, record = _train(trained, tmp_path, mode, processes=2)
    assert record["processes"] == 2 and record["device_cuda"] == 1
    models.load_model(out, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_real_model_trains_on_cuda(tmp_path, mode):
    raw = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    raw["train"]["max_steps"] = 40
    raw["train"][mode]["lr"] = {"full": 1e-4, "lora": 2e-3}[mode]
    write_params(tmp_path / "params.yaml", raw)
    make_demo_data(tmp_path, base=True)
    run = tmp_path / "run"
    run.mkdir()
    out, record = _train(tmp_path, run, mode)
    assert record["device_cuda"] == 1 and record["steps"] == 40
    models.load_model(out, "cuda")
