"""What a measurement ran on: the CPU model and its feature flags (Linux's /proc/cpuinfo).

Speed and quality figures from different machines are compared by these (TensorFlow picks its
kernels by the SIMD features); the benchmark scripts record them beside their results.
"""

from __future__ import annotations

import os
import platform
import re


def cpu_info() -> dict:
    """The first processor's fields in /proc/cpuinfo ({"model name": ..., "flags": ...}), or
    {} where there is no such file."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, value in
            (line.split(":", 1) for line in first.splitlines() if ":" in line)}


def cpu_model(info: dict | None = None) -> str:
    """lscpu's 'Model name' (e.g. "AMD EPYC 9B14"); elsewhere what ``platform`` knows."""
    info = cpu_info() if info is None else info
    return info.get("model name") or platform.processor() or platform.machine()


def cpu_flags(info: dict | None = None) -> set[str]:
    """The CPU's feature flags ("avx2", "avx512_bf16", "amx_tile", ...); empty when unknown."""
    info = cpu_info() if info is None else info
    return set(info.get("flags", "").split())


# The SIMD level that decides the kernel library's path, best first: AMX-BF16 and AVX512_BF16
# give oneDNN's native bfloat16 kernels, AVX-512 and AVX2 only float32 kernels (bfloat16 is
# emulated there).
_SIMD_LEVELS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
_SIMD_NAMES = {"avx512f": "avx512"}
_VENDORS = ("intel", "amd", "arm", "apple", "ampere", "hygon", "zhaoxin", "via")


def cpu_kind_slug(model: str | None, flags) -> str:
    """A short name for the kind of CPU a measurement ran on: vendor and family from the model
    name plus the decisive SIMD level, e.g. "amd_epyc_avx2", "intel_xeon_amx_bf16".

    ``flags``: feature flag names (a set or list) or a {name: bool} mapping. Machines of one
    kind run the same kernel paths, so their speed figures are comparable."""
    if isinstance(flags, dict):
        flags = {name for name, on in flags.items() if on}
    else:
        flags = set(flags or ())
    text = re.sub(r"\((?:r|tm)\)", " ", (model or "").lower())
    words = [w for w in re.findall(r"[a-z0-9]+", text)
             if w not in ("cpu", "processor", "genuine", "authentic")]
    start = next((i for i, w in enumerate(words) if w in _VENDORS), 0)
    family = "_".join(words[start:start + 2]) or "unknown_cpu"
    level = next((f for f in _SIMD_LEVELS if f in flags), None)
    return f"{family}_{_SIMD_NAMES.get(level, level) if level else 'no_avx2'}"


def onednn_requested() -> bool | None:
    """What ``TF_ENABLE_ONEDNN_OPTS`` asks TensorFlow for: True (oneDNN's CPU kernels), False
    (Eigen's), None (unset or unrecognised: TensorFlow's own default for the CPU). The package
    sets it when imported (keras_sf2f/__init__.py); read without importing TensorFlow."""
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    return {"1": True, "true": True, "0": False, "false": False}.get(value)
