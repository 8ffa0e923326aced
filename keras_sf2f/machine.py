"""What a measurement ran on: the CPU model and its feature flags (Linux's /proc/cpuinfo).

Speed and quality figures from different machines are compared by these (TensorFlow picks its
kernels by the SIMD features); the benchmark scripts record them beside their results.
"""

from __future__ import annotations

import platform


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
