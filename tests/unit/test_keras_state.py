"""Seeding and clearing Keras without TensorFlow's global seed and kernel cache: the same draws as Keras'
own functions, the kernel cache (and so the kept traced loops' instantiated graphs) left alone."""

from __future__ import annotations

import random

import keras
import numpy as np
import tensorflow as tf
from keras.src.utils import rng_utils
from tensorflow.python.eager import context

from worker import keras_state


def draws() -> list[np.ndarray]:
    """A model's initial weights, a Keras random draw, a shuffle's seed, NumPy's and Python's next."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5)])
    uniform = keras.random.uniform((2,), seed=keras.random.SeedGenerator())
    return [
        *model.get_weights(),
        np.asarray(uniform),
        keras.random.SeedGenerator().state.numpy(),
        np.random.rand(2),
        np.array([random.random()]),
    ]


def test_set_random_seed_draws_as_keras_own() -> None:
    keras.utils.set_random_seed(17)
    expected = draws()
    keras.utils.set_random_seed(99)
    keras_state.set_random_seed(17, "fast")
    actual = draws()
    for mine, theirs in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    keras_state.set_random_seed(18, "fast")
    assert not np.array_equal(draws()[0], expected[0])


def test_neither_touches_tensorflow_global_seed_which_would_clear_the_kernel_cache() -> None:
    tf.random.set_seed(7)
    keras_state.set_random_seed(3, "fast")
    keras_state.clear_session()
    assert context.global_seed() == 7


def test_the_fit_loop_gets_tensorflow_global_seed_too() -> None:
    tf.random.set_seed(7)
    keras_state.set_random_seed(3, "fit")
    assert context.global_seed() == 3


def test_clear_session_drops_keras_global_state() -> None:
    keras.layers.Dense(1)
    keras_state.set_random_seed(5, "fast")
    keras_state.clear_session()
    assert keras.layers.Dense(1).name == "dense"
    assert rng_utils.get_random_seed() is None
