"""One test routine for every Keras layer and model of the package (``run_layer_test``).

For a class, its constructor arguments and an input, it checks what each of them must do to be
trained, checkpointed, exported and reloaded:

1. **Forward pass**: built by its first call (inference mode), the outputs have the shapes the
   layer's own ``compute_output_shape`` promises (or ``expected_output_shape``) and the
   expected dtype (float32 unless told).
2. **Configuration**: ``get_config`` is JSON-serialisable and names every constructor argument
   with the value it was given (a missing argument is a real bug: ``from_config`` would
   rebuild a different layer with the defaults); ``from_config(get_config())`` rebuilds a
   layer whose own configuration is the same and which, given the first layer's weights
   (``set_weights``: same variables, same order), computes the same outputs bit for bit.
3. **Saving**: ``keras.saving.save_model`` to a ``.keras`` file and ``load_model`` give an
   object of the same class with the same configuration and the same outputs bit for bit.

Every comparison runs in inference mode (``training=False``), where the outputs are a pure
function of the weights: BatchNorm uses its moving statistics and dropout and the baseline's
inference noise (when switched off) do nothing.

tests/ is not a package: test files import this one as ``harness``, as they import
``conftest`` (pytest's default import mode puts tests/ on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import tempfile

import keras
import numpy as np


def random_inputs(shape, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """Standard-normal test data of ``shape`` (a fixed seed: reruns see the same numbers)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _plain(value):
    """Constructor arguments and config entries in JSON's terms (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _forward(layer, inputs, call_kwargs):
    return layer(inputs, training=False, **call_kwargs)


def _flat_arrays(outputs) -> list:
    return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(outputs)]


def _is_shape(value) -> bool:
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int)
                                                    for d in value)


def _shape_list(shapes) -> list:
    """A (possibly nested) output shape as a flat list of tuples."""
    if _is_shape(shapes):
        return [tuple(shapes)]
    return [shape for part in shapes for shape in _shape_list(part)]


def _check_same_outputs(expected: list, got: list, what: str) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        assert g.shape == e.shape, f"{what}: output {i} has shape {g.shape}, expected {e.shape}"
        np.testing.assert_array_equal(g, e, err_msg=f"{what}: output {i} differs")


def _check_config_names_arguments(cls, config: dict, init_kwargs: dict) -> None:
    for key, value in init_kwargs.items():
        if isinstance(value, (keras.layers.Layer, keras.Model)):
            continue  # sub-layers are serialised objects: the round trip checks them
        assert key in config, (f"{cls.__name__}.get_config() lacks the constructor argument "
                               f"{key!r}: from_config would use its default")
        assert _plain(config[key]) == _plain(value), (
            f"{cls.__name__}.get_config()[{key!r}] = {config[key]!r}, constructed with "
            f"{value!r}")


def run_layer_test(cls, init_kwargs: dict | None = None, input_data=None, *,
                   input_shape=None, call_kwargs: dict | None = None,
                   expected_output_shape=None, expected_output_dtype: str = "float32",
                   check_init_kwargs: bool = True):
    """Runs the three checks of the module docstring on ``cls(**init_kwargs)``.

    Args:
      cls: the layer or model class.
      init_kwargs: constructor arguments (sub-layers may be passed as objects; they must be
        fresh, since the layer takes ownership of them).
      input_data: the first call argument (an array), or ``input_shape`` to draw
        standard-normal float32 data of that shape.
      call_kwargs: further call arguments (``segment_mask``, ``return_hidden_states``, ...).
      expected_output_shape: a shape or a (nested) list of shapes; by default what
        ``compute_output_shape(input_shape)`` returns.
      expected_output_dtype: every output's dtype.
      check_init_kwargs: whether ``get_config`` must repeat every constructor argument
        (off only for classes that normalise an argument on purpose).

    Returns the built layer, for checks of the caller's own.
    """
    init_kwargs = dict(init_kwargs or {})
    call_kwargs = dict(call_kwargs or {})
    if input_data is None:
        if input_shape is None:
            raise ValueError("give input_data or input_shape")
        input_data = random_inputs(input_shape)
    input_data = np.asarray(input_data)

    # 1. Forward pass: shapes and dtypes.
    layer = cls(**init_kwargs)
    outputs = _flat_arrays(_forward(layer, input_data, call_kwargs))
    assert layer.built, f"{cls.__name__} is not built after its first call"
    if expected_output_shape is None:
        expected_output_shape = layer.compute_output_shape(tuple(input_data.shape))
    expected = _shape_list(expected_output_shape)
    assert len(outputs) == len(expected), (f"{cls.__name__}: {len(outputs)} outputs, "
                                           f"expected shapes {expected}")
    for i, (out, shape) in enumerate(zip(outputs, expected)):
        assert len(out.shape) == len(shape) and all(
            d is None or d == o for d, o in zip(shape, out.shape)), (
            f"{cls.__name__}: output {i} has shape {out.shape}, expected {shape}")
        assert out.dtype == np.dtype(expected_output_dtype), (
            f"{cls.__name__}: output {i} has dtype {out.dtype}, expected "
            f"{expected_output_dtype}")

    # 2. get_config -> from_config, with the weights copied over.
    config = layer.get_config()
    json.dumps(keras.saving.serialize_keras_object(layer))  # raises if not JSON-serialisable
    if check_init_kwargs:
        _check_config_names_arguments(cls, config, init_kwargs)
    revived = cls.from_config(config)
    _forward(revived, input_data, call_kwargs)  # builds it
    # Compared as JSON would store them (a sub-layer's build shape is a tuple in memory, a
    # list once read back from a .keras file).
    assert _plain(revived.get_config()) == _plain(config), (
        f"{cls.__name__}: from_config changed the config")
    assert [tuple(w.shape) for w in revived.weights] == [tuple(w.shape) for w in layer.weights], (
        f"{cls.__name__}: from_config built different variables")
    revived.set_weights(layer.get_weights())
    _check_same_outputs(outputs, _flat_arrays(_forward(revived, input_data, call_kwargs)),
                        f"{cls.__name__} from_config with copied weights")

    # 3. .keras save and load.
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, f"{layer.name}.keras")
        keras.saving.save_model(layer, path)
        loaded = keras.saving.load_model(path)
    assert type(loaded) is cls, f"{cls.__name__}: load_model gave a {type(loaded).__name__}"
    assert _plain(loaded.get_config()) == _plain(config), (
        f"{cls.__name__}: the .keras file changed the config")
    _check_same_outputs(outputs, _flat_arrays(_forward(loaded, input_data, call_kwargs)),
                        f"{cls.__name__} saved and loaded")
    return layer
