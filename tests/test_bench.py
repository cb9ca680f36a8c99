"""Smoke run of the benchmark (--quick) on the real packaged model, in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_bench_quick_through_the_gpu_script_on_the_cpu(tmp_path):
    """`bash bench/gpu.sh --cpu-check`: the CUDA tests skip, then the benchmark's smoke run (16 LoRA steps of the
    reference and of pairtune on the real packaged model, as on a CPU without native bf16: --isa avx2), then one
    results file. One run checks both the harness (bench/run.py) and the GPU script around it."""
    out = tmp_path / "gpu"
    out.mkdir()
    # a section another bench mode wrote for this machine kind must survive (a plain run once dropped them)
    kind = "cpu-no-native-bf16-avx2-restricted"
    (out / "bench.json").write_text(json.dumps({"machines": {kind: {"ablation": {"kept": 1}}}}))
    proc = subprocess.run(["bash", str(ROOT / "bench/gpu.sh"), "--cpu-check", str(out)], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1",
                                                           GPU_WORK=str(tmp_path / "work"), GPU_BENCH_ARGS="--isa avx2"))
    log = (out / "bench.log").read_text() if (out / "bench.log").exists() else ""
    assert proc.returncode == 0, (proc.stderr[-2000:], log[-2000:])
    res = json.loads((out / "gpu-results.json").read_text())
    tests = res["cuda_tests"]
    assert tests["tests"] >= 8 and tests["skipped"] == tests["tests"] and tests["failed"] == []
    assert res["bench_exit_code"] == 0 and res["wall_s"] < 480
    assert "CUDA tests 0 passed, 0 failed" in proc.stderr
    machines = res["bench"]["machines"]
    assert set(machines) == {kind}  # a GPU machine files as cuda-<its name>
    bench = machines[kind]
    assert bench["ablation"] == {"kept": 1}
    mach = bench["machine"]
    assert not mach["native_bf16"] and mach["cpu"] and mach["bf16_over_fp32"] > 0 and mach["cuda"] is None
    assert mach["isa_env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert mach["machine"] in log  # the CPU and its flags are printed beside the figures
    assert set(bench["training"]) == {"lora"}
    r = bench["training"]["lora"]
    assert r["median"]["reference"]["steps"] == r["median"]["pairtune"]["steps"] == 16
    med = r["median"]
    # the figures the report quotes are the ones the medians give, side by side in one run
    assert r["speedup"] == pytest.approx(med["reference"]["wall_s"] / med["pairtune"]["wall_s"], rel=1e-9)
    assert r["auc_diff"] == pytest.approx(med["pairtune"]["auc"] - med["reference"]["auc"], abs=1e-12)
    # equal quality: the bench exits non-zero (asserted above) when it is not, and says so
    assert r["quality_within_tolerance"] is True and "within tolerance" in log
    # (16 LoRA steps barely move the inverted base: AUC 0.3245 both, measured; the quality check is the match)
    assert "->" in log


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


def test_first_run_reads_what_the_pipeline_writes(tmp_path):
    """bench/first_run.py read metrics/tune_full.json, a path the pipeline stopped writing at 9ac90a5: the run of
    2026-12-07 (late) trained for 10 minutes and then crashed. Its reader, on a run folder laid out as the
    pipeline lays it out: the git-tracked metrics of the committed run, and the two DVC outputs (absent from a
    clean clone) at the paths dvc.yaml declares."""
    import shutil

    import yaml

    sys.path.insert(0, str(ROOT / "bench"))
    import first_run

    run = tmp_path / "run"
    methods = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["methods"]
    run.mkdir()
    shutil.copy(ROOT / "params.yaml", run / "params.yaml")
    for stage in ("tune", "train"):
        shutil.copytree(ROOT / "metrics" / stage, run / "metrics" / stage)
    pipeline = (ROOT / "dvc.yaml").read_text()
    for m in methods:
        for path, record in ((f"dvclive/train_{m}/train.json", {"lr": 1e-3}),
                             (f"plots/interpolate/{m}/chosen.json", {"alpha": 0.6})):
            assert path.replace(m, "${item.mode}") in pipeline  # a path the pipeline writes (and a stage reads)
            (run / path).parent.mkdir(parents=True)
            (run / path).write_text(json.dumps(record))
    trained, chosen = first_run.results(run)
    assert set(trained) == {f"{s}@{m}" for s in ("tune", "train") for m in methods}
    assert all(v > 0 for v in trained.values())
    assert chosen == {m: {"lr": 1e-3, "alpha": 0.6} for m in methods}
    outs = first_run._outs(yaml.safe_load((ROOT / "dvc.lock").read_text()))
    assert outs and not [k for k in outs if "metrics/train/" in k or "metrics/tune/" in k]  # wall times left out
