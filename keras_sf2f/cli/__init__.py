"""The command-line tools: one module per tool, each with a ``main`` and a ``run``.

``run`` is what both ways of starting a tool call: the console scripts that
``pip install -e .`` puts in ``.venv/bin`` (``sf2f-train``, ``sf2f-evaluate``, ... listed in
pyproject.toml) and the thin wrappers ``trainers/*.py`` and ``export/*.py`` that the README's
``python trainers/train.py ...`` commands run. A module's docstring is its tool's ``--help``,
followed by its options; ``FLAGS = ToolFlags("<tool>")`` gives a module the flags of the option
groups keras_sf2f/flags.py lists for it, and ``FLAGS.config(Group)`` their dataclass.

Importing this package imports neither TensorFlow nor absl (the REST client needs neither); it
only sets the defaults below in the environment, which TensorFlow reads when it is first
imported, so that a CPU-only machine starts a tool without GPU error lines.
"""

import os
import sys


def _has_gpu_driver() -> bool:
    """Whether a GPU driver TensorFlow could use is installed: NVIDIA's kernel driver, WSL's
    GPU paravirtualisation or AMD's ROCm driver; or a TensorFlow pluggable-device plugin."""
    if sys.platform != "linux":
        return True  # other platforms: leave TensorFlow's device discovery alone
    if any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")):
        return True
    return any(os.path.isdir(os.path.join(p, "tensorflow-plugins")) for p in sys.path if p)


def _quiet_tensorflow_start() -> None:
    """Environment defaults for TensorFlow, set before it is first imported; a value the user
    exported wins.

    What TensorFlow 2.21 prints on this project's CPU-only machine, and why (BUILD_NOTES.md,
    "Package layout and entry points"):

    * "failed call to cuInit: ... UNKNOWN ERROR (303)", an ERROR line, on the first op, because
      the GPU platform probes for a driver that is not there. TF_ENABLED_DEVICE_TYPES=CPU (only
      when no driver exists, so nothing usable is turned off) stops the probe, and with it the
      line. Raising TF_CPP_MIN_LOG_LEVEL to 3 would hide it too, and every real C++ error
      with it.
    * The CPU-instruction banner and TensorFlow's other C++ INFO and WARNING lines:
      TF_CPP_MIN_LOG_LEVEL=2, the project's long-standing default. ERROR and FATAL lines,
      Python exceptions, warnings and logging are never affected.
    * "Could not find cuda drivers", the oneDNN notice and absl's "All log messages before
      absl::InitializeLog()": printed while TensorFlow's libraries load, before any setting
      is read; no environment variable removes them (TF_ENABLE_ONEDNN_OPTS=0 would remove the
      oneDNN notice by turning oneDNN off, which changes speed and numerics).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "TF_ENABLED_DEVICE_TYPES" not in os.environ and not _has_gpu_driver():
        os.environ["TF_ENABLED_DEVICE_TYPES"] = "CPU"


_quiet_tensorflow_start()


def run_absl_tool(module_name: str) -> None:
    """Runs the tool module ``module_name``'s ``main(argv)`` under absl, exits with its status.

    The module's ``FLAGS`` (a ``keras_sf2f.flags.ToolFlags``: the tool's own options) parses the
    command line and prints ``--help``, which starts with ``__main__``'s docstring; ``__main__``
    is a thin wrapper or pip's console-script stub here, so it is given the tool module's.
    """
    from absl import app  # noqa: PLC0415 - not at import: the REST client has no absl

    module = sys.modules[module_name]
    sys.modules["__main__"].__doc__ = module.__doc__
    app.run(module.main, flags_parser=module.FLAGS.parse_command_line)
