"""Export and serving: audio -> face as a TF-Serving SavedModel (docs/serving.md).

* :mod:`~keras_sf2f.serving.wav` -- WAV decoding in the graph (stock ops).
* :mod:`~keras_sf2f.serving.resample` -- polyphase resampling to 16 kHz in the graph.
* :mod:`~keras_sf2f.serving.audio_formats` -- which audio the graph takes as it is, and
  conversion of the rest to WAV (no TensorFlow: used by the client and the development server).
* :mod:`~keras_sf2f.serving.inference` -- the serving functions (signatures) around a generator.
* :mod:`~keras_sf2f.serving.savedmodel` -- the export writer (versions, warm-up requests).
* :mod:`~keras_sf2f.serving.rest_server` -- a development server speaking TF-Serving's REST API.
* :mod:`~keras_sf2f.serving.client` -- REST and gRPC clients.
"""
