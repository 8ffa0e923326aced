"""keras-sf2f: SF2F (Speech Fusion to Face) in TensorFlow/Keras.

Package layout follows the data flow: audio -> data -> models -> training -> evaluation ->
serving; the command-line tools are :mod:`keras_sf2f.cli` (the ``sf2f-*`` console scripts,
also run as ``python trainers/<tool>.py`` and ``python export/<tool>.py``).
"""

import os as _os

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX512_VNNI /
# AVX512_BF16 / AMX; elsewhere (AVX2-only CPUs such as the AMD EPYC machines this project
# trains on) it uses Eigen's. oneDNN's kernels are the faster ones there too: the demo's
# training steps 1.5-1.7x (BUILD_NOTES.md, "The main job's time on the AMD kind"). The choice
# is made once, when TensorFlow loads, so it is made here, before any module imports it; an
# explicit TF_ENABLE_ONEDNN_OPTS (0 to get Eigen back) wins. GPU kernels are not affected.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
