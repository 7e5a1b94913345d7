"""TensorFlow set-up of a worker pool process: threads and GPU, applied before TensorFlow starts.

TensorFlow is not fork-safe, so it is imported only in pool processes, on their first task; this module's
`prepare_process` runs in each process right after the fork and only sets environment variables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import logging
import os
import shutil
import subprocess
import threading

from worker.gpu import GpuPlan, parse_nvidia_smi, plan_gpu

log = logging.getLogger(__name__)

_GPU_ENV = "KTUNE_GPUS"  # JSON [ids, memory_mb], found once by the parent and inherited by pool processes
_PLAN_ENV = "KTUNE_GPU_PLAN"


def discover_gpus() -> tuple[list[str], int | None]:
    """GPUs on this node, asked of nvidia-smi (no TensorFlow); none when it is absent or fails."""
    if "CUDA_VISIBLE_DEVICES" in os.environ and not os.environ["CUDA_VISIBLE_DEVICES"].strip():
        return [], None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None
    return parse_nvidia_smi(out)


def export_gpus(gpu_ids: list[str], memory_mb: int | None) -> None:
    """In the parent: remember the node's GPUs for the pool processes."""
    os.environ[_GPU_ENV] = json.dumps([gpu_ids, memory_mb])


def prepare_process(process_index: int, processes: int, cores: int) -> GpuPlan:
    """In a fresh pool process: pick its GPU share and size TensorFlow's thread pools to its cores."""
    gpu_ids, memory_mb = json.loads(os.environ.get(_GPU_ENV, "[[], null]"))
    plan = plan_gpu(process_index, processes, gpu_ids, memory_mb)
    os.environ["CUDA_VISIBLE_DEVICES"] = plan.visible_devices
    os.environ[_PLAN_ENV] = json.dumps([plan.memory_limit_mb, plan.memory_growth])
    threads = str(max(1, cores // max(1, processes)))
    # Each process gets its share of the cores: more threads than cores only adds contention.
    os.environ["TF_NUM_INTRAOP_THREADS"] = threads
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return plan


def configure_tensorflow() -> None:
    """Apply the process's plan once TensorFlow is imported, before it creates any tensor."""
    import tensorflow as tf

    memory_limit_mb, growth = json.loads(os.environ.get(_PLAN_ENV, "[null, false]"))
    try:
        threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        for gpu in tf.config.list_physical_devices("GPU"):
            if memory_limit_mb:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)]
                )
            elif growth:
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # TensorFlow had already started in this process; the env vars still applied
        log.warning("TensorFlow was initialised before its configuration could be applied")


_warm_lock = threading.Lock()
_warm = False


def warm_up() -> None:
    """Import and configure TensorFlow and keras-tuner once in this process; later calls return at once.

    Pool processes start this in a thread right after the fork, so the seconds the imports take overlap
    the wait for the first task instead of delaying it; a task that comes sooner waits for the same lock.
    """
    global _warm
    with _warm_lock:
        if _warm:
            return
        configure_tensorflow()
        import keras_tuner  # noqa: F401 - the import is the work

        # Everything imported so far lives as long as the process: keep it out of every later collection,
        # so the full collection in clear_session() after each trial takes milliseconds, not 0.4 s.
        gc.freeze()
        _warm = True


def warm_up_in_background() -> None:
    threading.Thread(target=warm_up, name="ktune-warm-up", daemon=True).start()


DROPS_PER_COLLECTION = 4
"""Kept models that leave before their frozen garbage is collected. Unfreezing returns everything frozen,
TensorFlow's import-time objects included (400,000 objects: 0.16 s to collect, more with the kept models),
to the collector; after every eviction (a process that moves on to another job evicts one model a trial)
that was a fifth of a short trial's time (bench/hyperband_vs_random.py's random job after the hyperband
job: 8.5-8.9 s, 6.8-7.7 s with this). The garbage of up to three left models waits meanwhile."""


def release_memory() -> None:
    """After a trial: drop Keras' state, collect garbage, freeze what is left out of later collections and
    hand freed heap pages back to the OS.

    Without malloc_trim, glibc keeps the pages a trial freed, so a process's RSS stays at its largest
    trial's; with it, RSS returns close to its idle size between trials.
    """
    from worker import keras_state
    from worker.model_cache import TRACED

    if TRACED.drops >= DROPS_PER_COLLECTION:
        # Kept models left: what was frozen with them may be garbage now (one slower collection).
        gc.unfreeze()
        TRACED.drops = 0
    # Keras' clear_session would also clear TensorFlow's kernel cache, and so the kept traced models'
    # instantiated graphs (worker.keras_state).
    keras_state.clear_session()  # it also runs gc.collect()
    # What outlives a trial (kept traced models: tens of thousands of objects each) stays out of the next
    # trials' collections, which would otherwise scan it all again after every trial (about 0.1 s).
    gc.freeze()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
