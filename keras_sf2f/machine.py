"""What a measurement ran on: the CPU model and its feature flags (Linux's /proc/cpuinfo).

Speed and quality figures from different machines are compared by these (TensorFlow picks its
kernels by the SIMD features); the benchmark scripts record them beside their results.
"""

from __future__ import annotations

import os
import platform
import re
import sys

_KERNELS_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# Whether TF_ENABLE_ONEDNN_OPTS was in the environment before the package set its default: an
# explicit choice of the user's is never changed (default_to_onednn records it).
_kernels_chosen_by_user = None


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
    value = os.environ.get(_KERNELS_VARIABLE, "").strip().lower()
    return {"1": True, "true": True, "0": False, "false": False}.get(value)


def default_to_onednn() -> None:
    """Asks TensorFlow for oneDNN's CPU kernels unless ``TF_ENABLE_ONEDNN_OPTS`` is set; the
    package calls this once, when it is imported, before TensorFlow loads (the reason is in
    keras_sf2f/__init__.py)."""
    global _kernels_chosen_by_user
    if _kernels_chosen_by_user is None:
        _kernels_chosen_by_user = _KERNELS_VARIABLE in os.environ
    os.environ.setdefault(_KERNELS_VARIABLE, "1")


def user_environment() -> dict:
    """os.environ as the user gave it: without the ``TF_ENABLE_ONEDNN_OPTS`` default the
    package set, for starting a tool in a subprocess that makes its own kernel choice (the
    development server: prefer_eigen_for_single_requests)."""
    env = dict(os.environ)
    if _kernels_chosen_by_user is False:
        env.pop(_KERNELS_VARIABLE, None)
    return env


def prefer_eigen_for_single_requests() -> bool:
    """Switches a process that serves one request at a time (the development server) to
    Eigen's CPU kernels on CPUs without AVX-512; True if it did.

    There oneDNN re-lays out the variable weights of every convolution on every call, which at
    batch 1 costs more than its faster arithmetic saves: the exported SavedModel's
    ``predict_waveform`` on the AMD EPYC AVX2 kind ran at 0.97 / 0.97 / 0.75x PyTorch's forward
    with Eigen against 0.85 / 0.72 / 0.72x with oneDNN (1.25 / 5 / 30 s), the generator alone
    16-33 ms against 24-37 (BUILD_NOTES.md, "CPU speed per kind"). Training batches are
    faster with oneDNN there, so the package's default stays oneDNN. Nothing changes when the
    user set ``TF_ENABLE_ONEDNN_OPTS``, when TensorFlow is already loaded (it read the switch
    then) or on AVX-512 CPUs, where TensorFlow itself picks oneDNN and it was not measured
    slower. A process started by one that imported the package inherits its default in the
    environment, which then counts as the user's choice, unless it is started with
    user_environment()."""
    if _kernels_chosen_by_user or "tensorflow" in sys.modules:
        return False
    flags = cpu_flags()
    if "avx512f" in flags or "avx2" not in flags:
        return False
    os.environ[_KERNELS_VARIABLE] = "0"
    return True
