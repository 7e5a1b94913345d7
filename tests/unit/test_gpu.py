"""GPU planning for worker processes (`worker.gpu`): pure decisions, no GPU needed."""

from __future__ import annotations

import pytest

from worker.gpu import GpuPlan, parse_nvidia_smi, plan_gpu


@pytest.mark.parametrize("memory", [None, 16_000])
@pytest.mark.parametrize(("index", "processes"), [(0, 1), (3, 4)])
def test_no_gpus_hides_every_gpu(index: int, processes: int, memory: int | None) -> None:
    assert plan_gpu(index, processes, [], memory) == GpuPlan(
        visible_devices="", memory_limit_mb=None, memory_growth=False
    )


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_a_gpu_per_process_gives_each_its_own_gpu_with_growth(processes: int) -> None:
    gpus = ["0", "1", "2", "3"]
    plans = [plan_gpu(index, processes, gpus, 24_000) for index in range(processes)]
    assert [plan.visible_devices for plan in plans] == gpus[:processes]
    assert all(plan.memory_growth and plan.memory_limit_mb is None for plan in plans)


def test_gpu_ids_are_passed_through_as_given() -> None:
    assert plan_gpu(1, 2, ["3", "7"], None).visible_devices == "7"


def test_more_processes_than_gpus_share_round_robin_with_a_memory_cap() -> None:
    gpus = ["0", "1"]
    plans = [plan_gpu(index, 5, gpus, 10_000) for index in range(5)]
    assert [plan.visible_devices for plan in plans] == ["0", "1", "0", "1", "0"]
    # ceil(5 / 2) = 3 processes per GPU at most, sharing 90% of the card.
    assert {plan.memory_limit_mb for plan in plans} == {int(10_000 * 0.9 / 3)} == {3000}
    assert not any(plan.memory_growth for plan in plans)


@pytest.mark.parametrize(
    ("processes", "gpus", "cap"), [(2, 1, 7200), (4, 1, 3600), (3, 2, 7200), (8, 3, 4800)]
)
def test_memory_cap_is_memory_times_share_over_sharing(processes: int, gpus: int, cap: int) -> None:
    ids = [str(i) for i in range(gpus)]
    assert {plan_gpu(i, processes, ids, 16_000).memory_limit_mb for i in range(processes)} == {cap}


def test_share_fraction_is_configurable() -> None:
    assert plan_gpu(0, 2, ["0"], 8_000, share_fraction=0.5).memory_limit_mb == 2_000


def test_caps_of_processes_sharing_a_gpu_fit_on_it() -> None:
    memory, processes = 11_019, 7
    plans = [plan_gpu(index, processes, ["0", "1"], memory) for index in range(processes)]
    for gpu in ("0", "1"):
        caps = [plan.memory_limit_mb or 0 for plan in plans if plan.visible_devices == gpu]
        assert 0 < sum(caps) <= memory * 0.9


def test_shared_gpus_of_unknown_memory_use_growth() -> None:
    plans = [plan_gpu(index, 3, ["0"], None) for index in range(3)]
    assert plans == [GpuPlan(visible_devices="0", memory_limit_mb=None, memory_growth=True)] * 3


def test_parse_nvidia_smi() -> None:
    output = "0, 16384\n1, 8192\n2, 24576\n"
    assert parse_nvidia_smi(output) == (["0", "1", "2"], 8192)


def test_parse_nvidia_smi_without_spaces_or_trailing_newline() -> None:
    assert parse_nvidia_smi("0,40960") == (["0"], 40960)


@pytest.mark.parametrize("output", ["", "\n", "   \n\n"])
def test_parse_nvidia_smi_without_gpus(output: str) -> None:
    assert parse_nvidia_smi(output) == ([], None)


def test_parse_nvidia_smi_with_unknown_memory() -> None:
    # nvidia-smi prints [N/A] for some cards; their ids still count, their memory does not.
    assert parse_nvidia_smi("0, [N/A]\n1, 4096\n") == (["0", "1"], 4096)
    assert parse_nvidia_smi("0, [N/A]\n") == (["0"], None)


def test_parse_nvidia_smi_skips_blank_lines() -> None:
    assert parse_nvidia_smi("0, 1000\n\n1, 2000\n") == (["0", "1"], 1000)


def test_parsed_output_plans_a_shared_gpu() -> None:
    ids, memory = parse_nvidia_smi("0, 12000\n")
    assert plan_gpu(1, 2, ids, memory) == GpuPlan(
        visible_devices="0", memory_limit_mb=5400, memory_growth=False
    )
