"""Hardware decisions in one place: what this machine runs fast, and what the `auto` speed knobs become.

`train.bf16`, `train.packing`, `train.fast_dropout` and `train.compact_embedding` take true, false or auto.
`auto` turns a speed knob on only where bench/ measured it faster at equal eval quality on that kind of
hardware (docs/performance.md; x = slowdown with the knob off):

| knob | CPU with native bf16 | CPU without (AVX2 only, or restricted) | CUDA |
|---|---|---|---|
| bf16 | on (x1.4) | off: autocast is emulated, x24 slower than fp32 | off (fp16 autocast was slower on an H100) |
| packing | on (x1.5-1.7) | on (x1.4-1.6) | off (not measured on a GPU yet) |
| fast_dropout | on (x1.1-1.3) | on (x1.0-1.2) | off (CUDA's RNG is cheap; CPU-only code) |
| compact_embedding | on | on | off (not measured on a GPU yet) |

compact_embedding is the exception: exact, and lighter (~110 MB less peak RSS), but its speed gain did not
show beyond noise in the 372-step ablation; it is on for that, not for speed.

"Native bf16" means the CPU has AVX512_BF16 or AMX-BF16 *and* the libraries torch uses will run them: the
standard knobs that cap the instruction set, `ONEDNN_MAX_CPU_ISA` (oneDNN, which runs bf16 matmuls) and
`ATEN_CPU_CAPABILITY` (ATen's vector kernels), are honoured, so `ONEDNN_MAX_CPU_ISA=AVX2` reproduces the
slow no-bf16 path on a CPU that has bf16 (bench/ checks that it really is slow there). An explicit `true`
where a knob is known to be slow still runs, with one warning line.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the CPU flags that decide the speed knobs
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA, or its old name DNNL_MAX_CPU_ISA) below AVX512_CORE_BF16: with one
# of these, oneDNN emulates bf16 matmuls. Higher caps (AVX512_CORE_BF16, AMX, AVX10, ALL) keep it native.
_ONEDNN_NO_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
_ATEN_NO_AVX512 = {"default", "avx2"}  # ATEN_CPU_CAPABILITY values that cap ATen below AVX-512


@dataclass(frozen=True)
class Machine:
    """What the knobs are decided on; logged at start-up and recorded beside every timing."""
    device: str  # cpu | cuda | cuda:N
    name: str  # CPU model or GPU name
    flags: tuple[str, ...]  # which of FLAGS the CPU has (as /proc/cpuinfo lists them)
    native_bf16: bool  # bf16 matmuls run natively here (see the module docstring)
    why: str  # one phrase: the reason for native_bf16

    def describe(self) -> str:
        """One line: the device, its name and flags, and the bf16 verdict."""
        kind = "GPU" if self.device.startswith("cuda") else "CPU"
        flags = " ".join(self.flags) or "none of " + "/".join(FLAGS)
        return (f"{kind} {self.name!r} (flags: {flags}); native bf16: {'yes' if self.native_bf16 else 'no'} "
                f"({self.why})")


@dataclass(frozen=True)
class Knobs:
    """The speed knobs as they will run."""
    bf16: bool
    packing: bool
    fast_dropout: bool
    compact_embedding: bool


def cpu_info(text: str | None = None) -> tuple[str, tuple[str, ...]]:
    """(model name, the FLAGS it has) from /proc/cpuinfo, or the platform's processor name elsewhere."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return name or platform.processor() or "unknown CPU", tuple(f for f in FLAGS if f in flags)


def bf16_verdict(flags: tuple[str, ...], env: dict[str, str] | None = None,
                 onednn_bf16: bool | None = None) -> tuple[bool, str]:
    """(native bf16?, why) for a CPU with `flags`, under the ISA caps in `env` (default: os.environ).

    `onednn_bf16` is torch's own view (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`, which honours
    ONEDNN_MAX_CPU_ISA); it alone is not enough, as it also says yes on AVX-512 CPUs that emulate bf16.
    """
    env = os.environ if env is None else env
    if not {"avx512_bf16", "amx_bf16"} & set(flags):
        return False, "the CPU has neither avx512_bf16 nor amx_bf16"
    cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if cap in _ONEDNN_NO_BF16:
        return False, f"ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below AVX512_CORE_BF16"
    aten = (env.get("ATEN_CPU_CAPABILITY") or "").strip().lower()
    if aten in _ATEN_NO_AVX512:
        return False, f"ATEN_CPU_CAPABILITY={aten} caps ATen below AVX-512"
    if onednn_bf16 is False:
        return False, "torch's oneDNN reports no bf16 support"
    return True, "avx512_bf16" if "avx512_bf16" in flags else "amx_bf16"


def machine(device: str) -> Machine:
    """Describe the device that will train (`device` as pairtune.models.pick_device returns it)."""
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        name = torch.cuda.get_device_name(index)
        return Machine(device, name, (), bool(torch.cuda.is_bf16_supported()), "CUDA compute capability "
                       + ".".join(map(str, torch.cuda.get_device_capability(index))))
    name, flags = cpu_info()
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        onednn = False
    native, why = bf16_verdict(flags, onednn_bf16=onednn)
    return Machine(device, name, flags, native, why)


def _pick(name: str, value: bool | str, auto: bool, slow_why: str | None) -> bool:
    """A knob's value: `auto` -> the measured default; an explicit true that is known to be slow warns once."""
    if value == "auto":
        return auto
    if value is True and slow_why:
        log.warning("train.%s: true on %s; it runs as asked (set auto to let pairtune decide)", name, slow_why)
    return bool(value)


def resolve(cfg: Any, mach: Machine, mode: str) -> Knobs:
    """The speed knobs of `cfg` (params.Train) for `mach`, training a method of kind `mode` (full | lora | ia3)."""
    cpu = not mach.device.startswith("cuda")
    slow_bf16 = ("a CPU without native bf16: autocast is emulated, about 10x slower than fp32 (bench/)"
                 if cpu and not mach.native_bf16 else
                 "CUDA, where autocast was not measured to pay for this model size" if not cpu else None)
    return Knobs(
        bf16=_pick("bf16", cfg.bf16, cpu and mach.native_bf16, slow_bf16),
        packing=_pick("packing", cfg.packing, cpu, None),
        fast_dropout=_pick("fast_dropout", cfg.fast_dropout, cpu, None) and cpu,  # CPU-only code
        compact_embedding=_pick("compact_embedding", cfg.compact_embedding, cpu, None) and mode == "full",
    )
