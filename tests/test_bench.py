"""Smoke run of the benchmark (--quick) on the real packaged model, in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, write_params

pytestmark = pytest.mark.slow


def test_bench_quick_writes_results(tmp_path, monkeypatch):
    import base as base_stage
    import generate as generate_stage
    import prepare as prepare_stage


    from ruamel.yaml import YAML

    # The default data, as `python bench/run.py --quick` sees it in the repo: with 4 steps (it was 64 pairs)
    # the LoRA adapter moved the probe by 8e-5 and the load guard refused it; --quick now trains 16 steps.
    cfg = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    write_params(tmp_path / "params.yaml", cfg)
    monkeypatch.chdir(tmp_path)
    generate_stage.main(["--out", "data/raw/generated", "--summary", "metrics/generate.json"])
    prepare_stage.main(["--out", "data/prepared", "--summary", "metrics/prepare.json"])
    base_stage.main(["--dev", "data/prepared/dev.jsonl", "--out", "models/base"])
    out = tmp_path / "results.json"
    # a section another bench mode wrote for this machine kind must survive (a plain run once dropped them)
    kind = "cpu-no-native-bf16-avx2-restricted"
    out.write_text(json.dumps({"machines": {kind: {"ablation": {"kept": 1}}}}))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # --isa avx2: as on a CPU without native bf16, whatever this one has
    # one mode: the harness is the same for both, and each costs ~40 s here
    proc = subprocess.run([sys.executable, str(ROOT / "bench/run.py"), "--quick", "--isa", "avx2", "--modes", "lora", "--data",
                           "data/prepared", "--base", "models/base", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())["machines"][kind]
    assert res["ablation"] == {"kept": 1}
    mach = res["machine"]
    assert not mach["native_bf16"] and mach["cpu"] and mach["bf16_over_fp32"] > 0
    assert mach["isa_env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert mach["machine"] in proc.stdout  # the CPU and its flags are printed beside the figures
    assert set(res["training"]) == {"lora"}
    for mode in ("lora",):
        r = res["training"][mode]
        assert r["median"]["reference"]["steps"] == r["median"]["pairtune"]["steps"] == 16
        assert r["speedup"] > 0 and "quality_within_tolerance" in r
        assert 0 <= r["median"]["pairtune"]["auc"] <= 1
    assert "speedup" in proc.stdout or "->" in proc.stdout


def test_gpu_script_runs_its_steps_on_the_cpu(tmp_path):
    """bench/gpu.sh --cpu-check: the CUDA tests skip, the benchmark runs a 16-step LoRA smoke, one results file."""
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(ROOT / "bench/gpu.sh"), "--cpu-check", str(out)], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, PYTHON=sys.executable,
                                                           GPU_WORK=str(tmp_path / "work")))
    assert proc.returncode == 0, (proc.stderr[-2000:], (out / "bench.log").read_text()[-2000:]
                                  if (out / "bench.log").exists() else "")
    res = json.loads((out / "gpu-results.json").read_text())
    tests = res["cuda_tests"]
    assert tests["tests"] >= 8 and tests["skipped"] == tests["tests"] and tests["failed"] == []
    kinds = res["bench"]["machines"]
    assert len(kinds) == 1 and next(iter(kinds)).startswith("cpu-")  # a GPU machine files as cuda-<its name>
    assert set(next(iter(kinds.values()))["training"]) == {"lora"}
    assert res["bench_exit_code"] == 0 and res["wall_s"] < 480
    assert "CUDA tests 0 passed, 0 failed" in proc.stderr


def test_gpu_report_names_failed_tests(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_report

    junit = tmp_path / "t.xml"
    junit.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
                     '<testcase classname="tests.test_cuda" name="test_a"/>'
                     '<testcase classname="tests.test_cuda" name="test_b"><failure message="AssertionError: x&#10;'
                     'more">trace</failure></testcase>'
                     '<testcase classname="tests.test_cuda" name="test_c"><skipped/></testcase>'
                     '</testsuite></testsuites>')
    assert gpu_report.junit_summary(junit) == {
        "tests": 3, "failures": 1, "errors": 0, "skipped": 1, "passed": 1,
        "failed": [{"test": "tests.test_cuda::test_b", "message": "AssertionError: x"}]}
    rc = gpu_report.main(["--out", str(tmp_path / "r.json"), "--smi", str(tmp_path / "none"), "--junit", str(junit),
                          "--tests-rc", "1", "--bench", str(tmp_path / "none.json"), "--bench-rc", "0", "--wall", "5"])
    assert rc == 1 and json.loads((tmp_path / "r.json").read_text())["cuda_tests"]["failures"] == 1
