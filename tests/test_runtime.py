"""core/runtime.py in one process: devices are validated where they are named, and agreement and
the collectives act on this process alone (their two-process behaviour: test_distributed_*.py)."""

import pytest
import torch

from detr_irpe.core.errors import DeviceError
from detr_irpe.core.runtime import (DistInfo, agree, gather_objects, is_distributed, mean_over_processes, rank,
                                    resolve_device, sum_over_processes, world_size)


def test_auto_and_cpu_resolve_here():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_one_names_the_option():
    with pytest.raises(DeviceError, match=r"--device=cuda:1 but CUDA is not available.*use --device=cpu"):
        resolve_device("cuda:1", "--device")


def test_a_name_that_is_no_device_is_refused():
    with pytest.raises(DeviceError, match=r"train.device 'gpu0' is not a device; expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0", "train.device")


def test_one_process_agrees_with_itself():
    assert not is_distributed() and world_size() == 1 and rank() == 0
    votes = agree({"stop": True, "end_of_data": False}, number=7)
    assert votes["stop"] == (0,) and votes["end_of_data"] == () and votes.total == 7.0
    assert gather_objects({"a": 1}) == [{"a": 1}]
    x = torch.tensor([2.0])
    assert sum_over_processes(x) is x and mean_over_processes({"l": x}) == {"l": x}


def test_dist_info_says_main_and_distributed():
    assert DistInfo().is_main and not DistInfo().distributed
    assert not DistInfo(rank=1, world_size=2).is_main and DistInfo(rank=1, world_size=2).distributed
