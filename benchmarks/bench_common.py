"""What the benchmark scripts share: printing and saving a result, and the PyTorch reference.

Each ``bench_*.py`` has ``measure(...) -> {"rows", "notes", ...}`` (collected by ``run.py``)
and ``markdown(result) -> str``; run on its own, a script prints both and can save the JSON.
The scripts import this module by its plain name: a script's own folder is on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def print_result(result: dict, markdown, json_path: str | None = None) -> None:
    """Prints ``markdown(result)`` and the result's notes; writes the result to ``json_path``."""
    print()
    print(markdown(result))
    for note in result.get("notes", []):
        print(f"- {note}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)


def tests_module(name: str):
    """The module tests/<name>.py: the PyTorch versions of the reference's modules
    (``torch_reference``, ``torch_facenet``) that the parity tests check the Keras models
    against, and the PyTorch side of the benchmarks. tests/ is not a package and not on
    sys.path, so the file is loaded by its path (once; later calls return the same module)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(TESTS_DIR, name + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as an import does (dataclasses look their module up there)
        spec.loader.exec_module(module)
    return sys.modules[name]
