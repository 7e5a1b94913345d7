"""Models whose hidden-layer widths, activation and dropout can change after their epoch loop was traced.

Tracing a model's epoch loop (`worker.fast_training`) costs a second or more, and the traced graph reads
each variable with the static shape it had, each dropout rate as a constant and each activation as the
function it was. Here a model's hidden Dense kernels and biases, and every optimizer slot, become
variables of free width; each Dropout layer reads its rate from a variable, and skips itself at rate 0
(a trial without dropout); each hidden Dense picks its activation from the job's choices by a variable.
The graph traced on them then runs just as well after they are assigned another trial's values. So one
traced loop trains every trial of a job with the same depth and optimizer (`worker.model_cache`), instead
of one trace per trial.

An elastic model is built with a Dropout layer after every hidden Dense when the job's dropout can be above
zero (`worker.model_builder.build_model(elastic=True)`); `load` and `unload` pair its layers with those of
a trial's plain model, which has Dropout layers only if the trial's rate is above zero.

This is the one module that touches Keras' internals (`KerasVariable._value` and `._shape`, a Dropout
layer's class and seed drawing, a Dense layer's activation), and only for models of
`worker.model_builder`: Dense layers, Dropout, and elementwise optimizers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.random import _cast_seed
from keras.src.random.seed_generator import draw_seed

_ELASTIC = "_ktune_elastic_models"
_ACTIVATIONS = "_ktune_activations"
OUTPUT_LAYER = "output"  # worker.model_builder's output Dense: its own width (the targets') stays fixed


def is_elastic(model: keras.Model) -> bool:
    return bool(getattr(model, _ELASTIC, False))


def mark_elastic(model: keras.Model, activations: Sequence[str] = ()) -> None:
    """Make `model` elastic when its epoch loop is built (`relax`); it must never be saved or exported.
    With two or more `activations` (the job's choices), its hidden layers take any of them."""
    object.__setattr__(model, _ELASTIC, True)  # not tracked by Keras as a model attribute
    object.__setattr__(model, _ACTIVATIONS, tuple(activations))


def relax(model: keras.Model) -> None:
    """Free the widths of `model`'s variables (hidden Dense kernels and biases in every dimension, the
    output kernel in its input dimension, every optimizer variable with a shape), its dropout rates and,
    where `mark_elastic` was given a choice, its hidden activations. The model and its optimizer must be
    built, and nothing traced on them yet (a trace keeps the variables it read)."""
    activations: tuple[str, ...] = getattr(model, _ACTIVATIONS, ())
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
            if len(activations) > 1:
                object.__setattr__(layer, "activation", _FreeActivation(activations))
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


class _FreeActivation:
    """A hidden Dense layer's activation, one of `names` picked by `index` (a variable) when the graph runs:
    only the picked function runs, forward and backward, so a trial trains exactly as with its own."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.functions: list[Callable[[Any], Any]] = [keras.activations.get(name) for name in names]
        self.index = tf.Variable(0, dtype=tf.int32, trainable=False)

    def pick(self, function: Callable[[Any], Any]) -> None:
        """Run `function` (a plain model's Dense activation) from now on; ValueError if not a choice."""
        for index, choice in enumerate(self.functions):
            if choice is function:
                self.index.assign(index)
                return
        raise ValueError(f"activation {function!r} is not one of {list(self.names)}: not the same layers")

    def __call__(self, x: Any) -> Any:
        branches = [lambda function=function: function(x) for function in self.functions]
        return tf.switch_case(self.index.read_value(), branches)


class _FreeRateDropout(keras.layers.Dropout):  # type: ignore[misc]
    """Keras' Dropout reading its rate from `_ktune_rate`, a float64 variable, with the same operations as
    Keras and TensorFlow apply to a Python rate (`tf.nn.experimental.stateless_dropout`): the same masks
    and the same scale to the last bit, so a trial trains exactly as on a model built with its rate. At
    rate 0 it passes its inputs on and draws no seed, as a model without the layer would."""

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        return tf.cond(self._ktune_rate > 0, lambda: self._drop(inputs), lambda: tf.identity(inputs))

    def _drop(self, inputs: Any) -> Any:
        seed = _cast_seed(draw_seed(self.seed_generator))
        rate = self._ktune_rate
        # TensorFlow computes a Python rate's scale 1 / (1 - rate) in double precision, then rounds it.
        scale = tf.cast(1.0 / (1.0 - rate), inputs.dtype)
        scaled = inputs * scale
        noise = tf.random.stateless_uniform(tf.shape(inputs), seed=seed, dtype=inputs.dtype)
        kept = noise >= tf.cast(rate, inputs.dtype)
        return tf.where(kept, scaled, tf.constant(0, inputs.dtype))


def _free_rate(layer: keras.layers.Dropout) -> None:
    """Make `layer` read its rate at run time."""
    object.__setattr__(
        layer, "_ktune_rate", tf.Variable(float(layer.rate), dtype=tf.float64, trainable=False)
    )
    layer.__class__ = _FreeRateDropout


def load(model: keras.Model, source: keras.Model) -> None:
    """Give `model` (elastic) every variable value of `source`: weights, dropout seed states and rates,
    activations, and the optimizer's state (learning rate included). Both come from the same layers but
    for their widths, activations and dropout (`source` may lack the Dropout layers of `model`)."""
    if not source.optimizer.built:
        source.optimizer.build(source.trainable_variables)
    for mine, theirs in _paired(model, source):
        if theirs is None:
            mine._ktune_rate.assign(0.0)  # the trial has no dropout
            continue
        _copy(theirs.variables, mine.variables)
        if isinstance(mine, keras.layers.Dropout):
            mine._ktune_rate.assign(float(theirs.rate))
        elif isinstance(mine.activation, _FreeActivation):
            mine.activation.pick(theirs.activation)
        elif mine.activation is not theirs.activation:
            raise ValueError(f"activation {theirs.activation!r} on {mine.activation!r}: not the same layers")
    _copy(source.optimizer.variables, model.optimizer.variables)


def unload(model: keras.Model, target: keras.Model) -> keras.Model:
    """`target`, given the values `model` (elastic, loaded from `target` by `load`) trained to; returns
    it. `target` is a plain model: it can be saved and exported, which an elastic one cannot. `load` built
    its optimizer."""
    for mine, theirs in _paired(model, target):
        if theirs is not None:
            _copy(mine.variables, theirs.variables)
    _copy(model.optimizer.variables, target.optimizer.variables)
    return target


def _paired(model: keras.Model, plain: keras.Model) -> list[tuple[Any, Any]]:
    """Each layer of `model` (elastic) that holds variables, with the layer of `plain` that it stands for:
    None for a Dropout layer that `plain` lacks."""
    theirs = deque(layer for layer in plain.layers if layer.variables)
    pairs: list[tuple[Any, Any]] = []
    for mine in (layer for layer in model.layers if layer.variables):
        dropout = isinstance(mine, keras.layers.Dropout)
        if dropout and not (theirs and isinstance(theirs[0], keras.layers.Dropout)):
            pairs.append((mine, None))
        elif theirs and dropout == isinstance(theirs[0], keras.layers.Dropout):
            pairs.append((mine, theirs.popleft()))
        else:
            raise ValueError(f"{_names(model)} against {_names(plain)}: not the same layers")
    if theirs:
        raise ValueError(f"{_names(model)} against {_names(plain)}: not the same layers")
    return pairs


def _names(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers if layer.variables]


def _copy(sources: list[Any], targets: list[Any]) -> None:
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} variables to copy into {len(targets)}: not the same layers")
    for source, target in zip(sources, targets, strict=True):
        target.assign(source)


def parameters(model: keras.Model) -> int:
    """The model's weights' sizes as they are now (count_params reads the static shapes, free here)."""
    return sum(int(tf.size(weight.value)) for weight in model.weights)
