"""The `auto` speed knobs: what pairtune.hardware decides for CPUs with and without native bf16, and CUDA."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import pytest

from pairtune import hardware, params
from pairtune.errors import PairtuneError
from pairtune.hardware import Machine
from conftest import TINY_PARAMS, write_params

ZEN4 = ("avx2", "avx512f", "avx512_bf16")  # AVX-512 with native bf16
ZEN3 = ("avx2",)  # AVX2 only: bf16 is emulated
SKYLAKE = ("avx2", "avx512f")  # AVX-512 without bf16: oneDNN says "supported" but emulates it

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_bf16 sha_ni
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_bf16 sha_ni
"""


def test_cpu_info_reads_name_and_the_flags_that_matter():
    assert hardware.cpu_info(CPUINFO) == ("AMD EPYC 9R14", ("avx2", "avx512f", "avx512_bf16"))
    assert hardware.cpu_info("model name : X\nflags : sse avx2 amx_bf16\n")[1] == ("avx2", "amx_bf16")


@pytest.mark.parametrize(("flags", "env", "onednn", "native", "why"), [
    (ZEN4, {}, True, True, "avx512_bf16"),
    (("avx2", "amx_bf16"), {}, True, True, "amx_bf16"),
    (ZEN3, {}, False, False, "neither avx512_bf16 nor amx_bf16"),
    (SKYLAKE, {}, True, False, "neither avx512_bf16 nor amx_bf16"),  # torch's own check says yes here
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False, False, "ONEDNN_MAX_CPU_ISA=AVX2"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "avx512_core"}, True, False, "ONEDNN_MAX_CPU_ISA=AVX512_CORE"),
    (ZEN4, {"DNNL_MAX_CPU_ISA": "AVX2"}, True, False, "ONEDNN_MAX_CPU_ISA=AVX2"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, True, True, "avx512_bf16"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "ALL"}, True, True, "avx512_bf16"),
    (ZEN4, {"ATEN_CPU_CAPABILITY": "avx2"}, True, False, "ATEN_CPU_CAPABILITY=avx2"),
    (ZEN4, {"ATEN_CPU_CAPABILITY": "default"}, True, False, "ATEN_CPU_CAPABILITY=default"),
    (ZEN4, {"ATEN_CPU_CAPABILITY": "avx512"}, True, True, "avx512_bf16"),
    (ZEN4, {}, False, False, "oneDNN reports no bf16"),
])
def test_bf16_verdict_honours_the_isa_knobs(flags, env, onednn, native, why):
    got, reason = hardware.bf16_verdict(flags, env, onednn)
    assert got is native and why in reason


def _cfg(**knobs):
    p = params.from_dict(copy.deepcopy(TINY_PARAMS))
    return replace(p.train, **{"bf16": "auto", "packing": "auto", "fast_dropout": "auto",
                               "compact_embedding": "auto", **knobs})


CPU_BF16 = Machine("cpu", "AMD EPYC", ZEN4, True, "avx512_bf16")
CPU_AVX2 = Machine("cpu", "AMD EPYC", ZEN3, False, "the CPU has neither avx512_bf16 nor amx_bf16")
H100 = Machine("cuda", "NVIDIA H100 80GB HBM3", (), True, "CUDA compute capability 9.0")


@pytest.mark.parametrize(("mach", "mode", "expected"), [
    (CPU_BF16, "full", hardware.Knobs(bf16=True, packing=True, fast_dropout=True, compact_embedding=True)),
    (CPU_BF16, "lora", hardware.Knobs(bf16=True, packing=True, fast_dropout=True, compact_embedding=False)),
    (CPU_AVX2, "full", hardware.Knobs(bf16=False, packing=True, fast_dropout=True, compact_embedding=True)),
    (H100, "full", hardware.Knobs(bf16=False, packing=False, fast_dropout=False, compact_embedding=False)),
])
def test_auto_turns_on_only_what_was_measured_to_pay(mach, mode, expected):
    assert hardware.resolve(_cfg(), mach, mode) == expected


def test_explicit_values_win_and_a_known_slow_one_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="pairtune.hardware"):
        knobs = hardware.resolve(_cfg(bf16=True, packing=False), CPU_AVX2, "full")
    assert knobs.bf16 is True and knobs.packing is False
    assert "train.bf16: true on a CPU without native bf16" in caplog.text and len(caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairtune.hardware"):
        assert hardware.resolve(_cfg(bf16=True), CPU_BF16, "full").bf16 is True
    assert not caplog.records  # native bf16: nothing to warn about
    # cheap dropout is CPU code: an explicit true on CUDA is a no-op, recorded as off
    assert hardware.resolve(_cfg(fast_dropout=True), H100, "full").fast_dropout is False


def test_this_machine_is_described():
    mach = hardware.machine("cpu")
    assert mach.device == "cpu" and mach.name
    line = mach.describe()
    assert line.startswith("CPU ") and "native bf16: " in line and mach.why in line


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_switch_params_take_true_false_or_auto(tmp_path, value):
    raw = copy.deepcopy(TINY_PARAMS)
    raw["train"]["bf16"] = value
    assert params.load(write_params(tmp_path / "params.yaml", raw)).train.bf16 == value


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_switch_params_reject_anything_else(tmp_path, value):
    raw = copy.deepcopy(TINY_PARAMS)
    raw["train"]["packing"] = value
    with pytest.raises(PairtuneError, match=r"params.yaml: train.packing: expected true, false or auto, got "):
        params.load(write_params(tmp_path / "params.yaml", raw))
