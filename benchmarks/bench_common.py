"""What the benchmark scripts' command lines share: printing and saving a result.

Each ``bench_*.py`` has ``measure(...) -> {"rows", "notes", ...}`` (collected by ``run.py``)
and ``markdown(result) -> str``; run on its own, a script prints both and can save the JSON.
"""

from __future__ import annotations

import json


def print_result(result: dict, markdown, json_path: str | None = None) -> None:
    """Prints ``markdown(result)`` and the result's notes; writes the result to ``json_path``."""
    print()
    print(markdown(result))
    for note in result.get("notes", []):
        print(f"- {note}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
