"""keras-sf2f: SF2F (Speech Fusion to Face) in TensorFlow/Keras.

Package layout follows the data flow: audio -> data -> models -> training -> evaluation ->
serving; the command-line tools are :mod:`keras_sf2f.cli` (the ``sf2f-*`` console scripts,
also run as ``python trainers/<tool>.py`` and ``python export/<tool>.py``).
"""
