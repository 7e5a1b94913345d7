"""Which GPU each worker process uses, and how much of it: pure decisions, applied by worker.runtime.

With at least as many GPUs as pool processes every process gets its own GPU with memory growth. With
fewer, processes share GPUs round-robin and each gets an explicit memory cap, so one process cannot take a
whole card from its neighbours. With none, TensorFlow sees no GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuPlan:
    """CUDA_VISIBLE_DEVICES for one process, and an optional memory cap in MiB on its (only) GPU."""

    visible_devices: str
    memory_limit_mb: int | None
    memory_growth: bool


def plan_gpu(
    process_index: int,
    processes: int,
    gpu_ids: list[str],
    gpu_memory_mb: int | None,
    share_fraction: float = 0.9,
) -> GpuPlan:
    """The plan for pool process `process_index` (0-based) of `processes` on a node with these GPUs."""
    if not gpu_ids:
        return GpuPlan(visible_devices="", memory_limit_mb=None, memory_growth=False)
    gpu = gpu_ids[process_index % len(gpu_ids)]
    sharing = math.ceil(processes / len(gpu_ids))
    if sharing <= 1:
        return GpuPlan(visible_devices=gpu, memory_limit_mb=None, memory_growth=True)
    if gpu_memory_mb is None:
        # Without the card's size a cap cannot be computed; growth at least keeps each share small.
        return GpuPlan(visible_devices=gpu, memory_limit_mb=None, memory_growth=True)
    return GpuPlan(
        visible_devices=gpu,
        memory_limit_mb=int(gpu_memory_mb * share_fraction / sharing),
        memory_growth=False,
    )


def parse_nvidia_smi(output: str) -> tuple[list[str], int | None]:
    """GPU ids and the smallest card's memory (MiB) from `nvidia-smi --query-gpu=index,memory.total
    --format=csv,noheader,nounits`."""
    ids, sizes = [], []
    for line in output.strip().splitlines():
        index, _, memory = line.partition(",")
        if index.strip():
            ids.append(index.strip())
            if memory.strip().isdigit():
                sizes.append(int(memory.strip()))
    return ids, (min(sizes) if sizes else None)
