"""Models whose hidden-layer widths and dropout rate can change after their epoch loop was traced.

Tracing a model's epoch loop (`worker.fast_training`) costs a second or more, and the traced graph reads
each variable with the static shape it had, and each dropout rate as a constant. Here a model's hidden
Dense kernels and biases, and every optimizer slot, become variables of free width, and each Dropout
layer reads its rate from a variable: the graph traced on them then runs just as well after they are
assigned another trial's values. So one traced loop trains every trial of a job whose layers differ only
in their units and dropout rate (`worker.model_cache`), instead of one trace per trial.

This is the one module that touches Keras' internals (`KerasVariable._value` and `._shape`, a Dropout
layer's class and seed drawing), and only for models of `worker.model_builder`: Dense layers, Dropout,
and elementwise optimizers.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.random import _cast_seed
from keras.src.random.seed_generator import draw_seed

_ELASTIC = "_ktune_elastic_models"
OUTPUT_LAYER = "output"  # worker.model_builder's output Dense: its own width (the targets') stays fixed


def is_elastic(model: keras.Model) -> bool:
    return bool(getattr(model, _ELASTIC, False))


def mark_elastic(model: keras.Model) -> None:
    """Make `model` elastic when its epoch loop is built (`relax`); it must never be saved or exported."""
    object.__setattr__(model, _ELASTIC, True)  # not tracked by Keras as a model attribute


def relax(model: keras.Model) -> None:
    """Free the widths of `model`'s variables (hidden Dense kernels and biases in every dimension, the
    output kernel in its input dimension, every optimizer variable with a shape) and its dropout rates.
    The model and its optimizer must be built, and nothing traced on them yet (a trace keeps the
    variables it read)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            _free_rate(layer)
        if not isinstance(layer, keras.layers.Dense):
            continue
        if layer.name == OUTPUT_LAYER:
            _relax(layer.kernel, (None, layer.kernel.shape[1]))
        else:
            _relax(layer.kernel, (None, None))
            if layer.bias is not None:
                _relax(layer.bias, (None,))
    optimizer = model.optimizer
    for variable in optimizer.variables:
        # Every optimizer in worker.model_builder updates its slots elementwise, whatever their shape.
        if len(variable.shape) > 0:
            _relax(variable, (None,) * len(variable.shape))
    # Keras' TensorFlow optimizers find a model variable's slots by the id of its TensorFlow variable.
    optimizer._trainable_variables_indices = {
        optimizer._var_key(variable): index for index, variable in enumerate(optimizer._trainable_variables)
    }


def _relax(variable: Any, shape: tuple[int | None, ...]) -> None:
    """Give `variable` a TensorFlow variable of the same value whose shape is only `shape`'s."""
    old: tf.Variable = variable._value
    variable._value = tf.Variable(
        old.read_value(),
        shape=tf.TensorShape(shape),
        dtype=old.dtype,
        trainable=old.trainable,
        name=variable.name,
    )
    variable._shape = shape  # KerasVariable.assign checks values against it: None takes any width


class _FreeRateDropout(keras.layers.Dropout):  # type: ignore[misc]
    """Keras' Dropout reading its rate from `_ktune_rate`, a float64 variable, with the same operations as
    Keras and TensorFlow apply to a Python rate (`tf.nn.experimental.stateless_dropout`): the same masks
    and the same scale to the last bit, so a trial trains exactly as on a model built with its rate."""

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        seed = _cast_seed(draw_seed(self.seed_generator))
        rate = self._ktune_rate
        # TensorFlow computes a Python rate's scale 1 / (1 - rate) in double precision, then rounds it.
        scale = tf.cast(1.0 / (1.0 - rate), inputs.dtype)
        scaled = inputs * scale
        noise = tf.random.stateless_uniform(tf.shape(inputs), seed=seed, dtype=inputs.dtype)
        kept = noise >= tf.cast(rate, inputs.dtype)
        return tf.where(kept, scaled, tf.constant(0, inputs.dtype))


def _free_rate(layer: keras.layers.Dropout) -> None:
    """Make `layer` read its rate (above zero: a model without dropout has no Dropout layer) at run time."""
    object.__setattr__(
        layer, "_ktune_rate", tf.Variable(float(layer.rate), dtype=tf.float64, trainable=False)
    )
    layer.__class__ = _FreeRateDropout


def load(model: keras.Model, source: keras.Model) -> None:
    """Give `model` (elastic) every variable value of `source`: weights, dropout seed states and rates,
    and the optimizer's state (learning rate included). Both come from the same layers but for their
    widths and dropout rates."""
    if not source.optimizer.built:
        source.optimizer.build(source.trainable_variables)
    _copy(source.variables, model.variables)
    _copy(source.optimizer.variables, model.optimizer.variables)
    for mine, theirs in zip(_dropouts(model), _dropouts(source), strict=True):
        mine._ktune_rate.assign(float(theirs.rate))


def _dropouts(model: keras.Model) -> list[keras.layers.Dropout]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]


def unload(model: keras.Model, target: keras.Model) -> keras.Model:
    """`target`, given the values `model` (elastic, loaded from `target` by `load`) trained to; returns
    it. `target` is a plain model: it can be saved and exported, which an elastic one cannot. `load` built
    its optimizer."""
    _copy(model.variables, target.variables)
    _copy(model.optimizer.variables, target.optimizer.variables)
    return target


def _copy(sources: list[Any], targets: list[Any]) -> None:
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} variables to copy into {len(targets)}: not the same layers")
    for source, target in zip(sources, targets, strict=True):
        target.assign(source)


def parameters(model: keras.Model) -> int:
    """The model's weights' sizes as they are now (count_params reads the static shapes, free here)."""
    return sum(int(tf.size(weight.value)) for weight in model.weights)
