"""Every option of the tools, declared once as a field of a typed dataclass.

``options.py`` is how a field becomes an option (default, help, bounds or choices, and the
flag's name when it is not the field's); ``groups.py`` holds the option groups that have no
library dataclass of their own (data preparation, evaluation, export, serving, the tools'
directories, ...) and the options several groups share. The model, training, face-identity
network and curation options are the library's own ``ModelConfig``
(keras_sf2f/models/builder.py), ``TrainConfig`` (keras_sf2f/training/config.py),
``FaceIdentityConfig`` (keras_sf2f/training/face_identity_config.py) and ``CurationConfig``
(keras_sf2f/curation/config.py). keras_sf2f/flags.py turns these dataclasses into each tool's
absl flags.

Nothing here imports absl, TensorFlow or Keras: the models, the training configuration and the
REST client import it.
"""
