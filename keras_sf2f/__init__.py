"""keras-sf2f: SF2F (Speech Fusion to Face) in TensorFlow/Keras.

Package layout follows the data flow: audio -> data -> models -> training -> evaluation ->
serving; the command-line tools are :mod:`keras_sf2f.cli` (the ``sf2f-*`` console scripts,
also run as ``python trainers/<tool>.py`` and ``python export/<tool>.py``).
"""

from keras_sf2f import machine as _machine

# TensorFlow switches its oneDNN CPU kernels on by itself only on CPUs with AVX512_VNNI /
# AVX512_BF16 / AMX; on AVX2-only CPUs (the AMD EPYC machines this project also runs on) it
# uses Eigen's, which are the slower ones there: the demo's training steps run 1.5-1.7x faster
# with oneDNN and the production SF2F-128 step 1.2x (BUILD_NOTES.md, "The main job's time on
# the AMD kind"). TensorFlow reads the switch once, when it loads, so it is set here, before
# any module of the package imports TensorFlow; an explicit TF_ENABLE_ONEDNN_OPTS wins (0 gives
# Eigen back). Entry points import this package before TensorFlow. GPU kernels are unaffected.
# The development server serves single requests, where the AVX2 kind is faster with Eigen:
# machine.prefer_eigen_for_single_requests.
_machine.default_to_onednn()
