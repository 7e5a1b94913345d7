"""Models whose hidden-layer widths can change after their epoch loop was traced.

Tracing a model's epoch loop (`worker.fast_training`) costs a second or more, and the traced graph reads
each variable with the static shape it had. Here a model's hidden Dense kernels and biases, and every
optimizer slot, become variables of free width: the graph traced on them then runs just as well after
they are assigned values of other widths. So one traced loop trains every trial of a job whose layers
differ only in their units (`worker.model_cache`), instead of one trace per trial.

This is the one module that touches Keras' variable internals (`KerasVariable._value`, `._shape`), and it
does so only for models of `worker.model_builder`: Dense layers, Dropout, and elementwise optimizers.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

_ELASTIC = "_ktune_elastic_widths"
OUTPUT_LAYER = "output"  # worker.model_builder's output Dense: its own width (the targets') stays fixed


def is_elastic(model: keras.Model) -> bool:
    return bool(getattr(model, _ELASTIC, False))


def mark_elastic(model: keras.Model) -> None:
    """Make `model` elastic when its epoch loop is built (`relax`); it must never be saved or exported."""
    object.__setattr__(model, _ELASTIC, True)  # not tracked by Keras as a model attribute


def relax(model: keras.Model) -> None:
    """Free the widths of `model`'s variables: hidden Dense kernels and biases in every dimension, the
    output kernel in its input dimension, and every optimizer variable with a shape. The model and its
    optimizer must be built, and nothing traced on them yet (a trace keeps the variables it read)."""
    for layer in model.layers:
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


def load(model: keras.Model, source: keras.Model) -> None:
    """Give `model` (elastic) every variable value of `source`: weights, dropout seed states and the
    optimizer's state (learning rate included). Both come from the same layers but for their widths."""
    if not source.optimizer.built:
        source.optimizer.build(source.trainable_variables)
    _copy(source.variables, model.variables)
    _copy(source.optimizer.variables, model.optimizer.variables)


def unload(model: keras.Model, target: keras.Model) -> keras.Model:
    """`target`, given the values `model` (elastic, loaded from `target` by `load`) trained to; returns
    it. `target` is a plain model: it can be saved and exported, which an elastic one cannot."""
    if not target.optimizer.built:
        target.optimizer.build(target.trainable_variables)
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
