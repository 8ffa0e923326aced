"""The paper's orderings (full SF2F above each ablation, SF2F above voice2face, longer speech
and the fuser helping), checked on measured results with their run-to-run noise."""

from __future__ import annotations

import math

from keras_sf2f.evaluation.ablations.catalog import BASE_ABOVE, variants

# The seed's tables' protocols: one random crop of 1.25 s and of 5 s per identity and run.
TABLE_PROTOCOLS = ("crops_1.25s", "crops_5s")


def protocol_label(protocol: str) -> str:
    return protocol[len("crops_"):-1] + " s" if protocol.startswith("crops_") else protocol


def _compare(results: dict, a: str, b: str, protocol: str, embedder: str, metric: str):
    """(mean a - mean b, noise) with noise = 2 standard errors of the difference; None when a
    value is missing."""
    try:
        ca = results[a][protocol][embedder][metric]
        cb = results[b][protocol][embedder][metric]
    except KeyError:
        return None
    se = math.sqrt(ca["variance"] / max(ca["runs"], 1) + cb["variance"] / max(cb["runs"], 1))
    return ca["mean"] - cb["mean"], 2 * se


def orderings(results: dict, embedder: str, metric: str = "recall@10",
              chosen: list | None = None) -> list:
    """The paper's orderings, checked on these results: ``[(claim, verdict, detail)]``.

    ``chosen``: the plan's variants (``catalog.Variant``), whose ``claim`` says which way the
    paper predicts each Table-2 row against full SF2F (default: the reference recipe's).
    A comparison "holds" when the difference has the paper's sign and exceeds two standard
    errors over evaluation runs, is "reversed" when it has the opposite sign beyond that, and
    is "within noise" otherwise. (Runs share crops across models, so this is conservative.)"""
    if chosen is None:
        chosen = variants(128)
    out = []

    def verdict(diffs):
        if not diffs:
            return "not measured"
        signs = ["holds" if d > n else "reversed" if d < -n else "within noise"
                 for d, n in diffs]
        if len(set(signs)) == 1:
            return signs[0]
        return "mixed: " + ", ".join(signs)

    def detail(pairs):
        return "; ".join(f"{label}: {d:+.3f} (±{n:.3f})" for label, (d, n) in pairs)

    def better_worse(v):
        """(the row the paper says is better, the one it says is worse)."""
        return ("sf2f", v.name) if v.claim == BASE_ABOVE else (v.name, "sf2f")

    table2 = [v for v in chosen if v.claim and v.name in results]
    if "sf2f" in results and table2:
        for protocol in TABLE_PROTOCOLS:
            pairs = [(v, c) for v in table2
                     if (c := _compare(results, *better_worse(v), protocol, embedder, metric))]
            out.append((f"the paper's side of every Table-2 row ({protocol_label(protocol)})",
                        verdict([c for _, c in pairs]),
                        detail([(" - ".join(better_worse(v)), c) for v, c in pairs])))
        for v in table2:
            pairs = [(protocol_label(p), c) for p in TABLE_PROTOCOLS
                     if (c := _compare(results, *better_worse(v), p, embedder, metric))]
            claim = (f"removing/replacing for `{v.name}` hurts" if v.claim == BASE_ABOVE
                     else f"adding for `{v.name}` helps")
            out.append((claim, verdict([c for _, c in pairs]), detail(pairs)))
    for model in ("sf2f", "sf2f_fuser"):
        if model in results and "voice2face" in results:
            pairs = [(protocol_label(p), c) for p in TABLE_PROTOCOLS
                     if (c := _compare(results, model, "voice2face", p, embedder, metric))]
            out.append((f"`{model}` above voice2face", verdict([c for _, c in pairs]),
                        detail(pairs)))
    for model in ("sf2f", "sf2f_fuser", "voice2face"):
        if model in results:
            try:
                a = results[model]["crops_5s"][embedder][metric]
                b = results[model]["crops_1.25s"][embedder][metric]
            except KeyError:
                continue
            # Different crops: independent standard errors.
            d = a["mean"] - b["mean"]
            n = 2 * math.sqrt(a["variance"] / a["runs"] + b["variance"] / b["runs"])
            out.append((f"5 s above 1.25 s for `{model}`", verdict([(d, n)]),
                        detail([("5 s - 1.25 s", (d, n))])))
    if "sf2f" in results and "sf2f_fuser" in results:
        pairs = [(protocol_label(p), c) for p in TABLE_PROTOCOLS
                 if (c := _compare(results, "sf2f_fuser", "sf2f", p, embedder, metric))]
        out.append(("the fuser helps (sf2f_fuser above sf2f)", verdict([c for _, c in pairs]),
                    detail(pairs)))
    return out
