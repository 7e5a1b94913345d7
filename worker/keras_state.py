"""Seeding Keras and dropping its global state without clearing TensorFlow's kernel cache.

`keras.utils.set_random_seed` (through `tf.random.set_seed`) and `keras.backend.clear_session` both clear
TensorFlow's kernel cache, and with it the instantiated graph of every traced epoch loop this process
keeps (`worker.model_cache`): the loop's next run then instantiates and optimizes its graph again, about
0.3 s for a small model, before every execution. ktune's models and its fast loop draw all their
randomness from Keras' seed generators (stateless operations seeded from Keras' global seed), never from
TensorFlow's global seed, so leaving that seed alone changes none of their results (`model.fit`, which
shuffles with it, still gets it); the cache is bounded by replacing pool processes
(`KTUNE_WORKER_MAX_MEMORY_PER_CHILD_MB`, `KTUNE_WORKER_MAX_TASKS_PER_CHILD`).
"""

from __future__ import annotations

import gc
import random
import threading

import keras
import numpy as np
from keras.src.backend.common import global_state
from keras.src.random import seed_generator
from keras.src.utils import rng_utils


def set_random_seed(seed: int, loop: str) -> None:
    """`keras.utils.set_random_seed(seed)` for the training loop `loop` (KTUNE_TRAINING_LOOP). For the fast
    loop, without TensorFlow's own global seed: Keras' global seed (and a new global seed generator from
    it), Python's and NumPy's. `model.fit` (the fit loop) shuffles with TensorFlow's seed: it gets Keras'
    own function."""
    if loop != "fast":
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def clear_session() -> None:
    """`keras.backend.clear_session()` but for the kernel cache: Keras' global state (layer names, the
    global seed), TensorFlow's default graph, then a garbage collection."""
    import tensorflow as tf

    global_state.GLOBAL_STATE_TRACKER = threading.local()
    global_state.GLOBAL_SETTINGS_TRACKER = threading.local()
    tf.compat.v1.reset_default_graph()
    gc.collect()
