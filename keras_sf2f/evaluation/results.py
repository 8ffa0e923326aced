"""What an evaluation's results are called: the names and records that ``evaluate.py`` writes
and the pages and tables that show them (``results_page.py``, ``ablations/``) read.

They live here, below both, so that the results page does not import the evaluation that
imports it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_sf2f.evaluation.oracle import MEAN_DRAWS

#: Model and protocol names of the voice-attribute oracle's rows (``oracle.py``).
ORACLE_MODEL = "voice-attribute oracle"
ORACLE_PROTOCOL = "drawn"
ORACLE_VOICE_ONLY_PROTOCOL = "voice only"
ORACLE_VOICE_MEAN_PROTOCOL = f"voice only, mean of {MEAN_DRAWS}"
#: Model and protocol names of the ground-truth photos' rows in the face-figure tables.
GROUND_TRUTH_MODEL = "ground truth"
GROUND_TRUTH_PROTOCOL = "photos"


#: Why an identity has no typicality although its model has (the serving graph needs a window).
NO_WINDOW = "no whole 1.25 s window (125 frames) of speech in any utterance"


@dataclasses.dataclass
class VoiceTypicality:
    """One model's voice typicality of every identity of the evaluation split.

    ``values``: float ``[identities]`` in [0, 1], split order (NaN: ``NO_WINDOW``), or ``None``
    when it could not be computed (``reason`` says why); ``warning_below``: the export's
    threshold; ``info``: the export's ``voice_typicality`` metadata section for this model
    (definition, bank and calibration counts, data directory) and ``fusion``."""
    values: np.ndarray | None
    warning_below: float
    reason: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    def to_json(self, names: list) -> dict:
        out = {"available": self.values is not None, "warning_below": self.warning_below}
        if self.values is None:
            out["reason"] = self.reason
        else:
            out["values"] = {str(n): (None if np.isnan(v) else float(v))
                             for n, v in zip(names, self.values)}
            out["below_threshold"] = [str(n) for n, v in zip(names, self.values)
                                      if v < self.warning_below]
            out["no_value"] = NO_WINDOW if np.isnan(self.values).any() else ""
        return {**out, **self.info}


def sample_resolutions(samples: dict, label: str, count: int) -> dict:
    """``{size: faces of the first count identities}`` of one protocol of a model's samples
    (every resolution for ``FaceSamples``, the largest otherwise), sizes ascending."""
    per_size = dict(getattr(samples, "resolutions", {}).get(label, {}))
    images = samples[label]
    per_size[int(images.shape[1])] = images
    return {size: per_size[size][:count] for size in sorted(per_size)}
