"""Which device and which process: the one place that answers "which device, which process, is
this run distributed?", and the few collectives every layer uses.

One code path from a laptop to a cluster: with ``WORLD_SIZE`` > 1 in the environment (torchrun,
or detr-irpe submit under SLURM) a process group is created, NCCL on GPUs and gloo on CPUs, with a
timeout so that a dead peer makes the others fail instead of hanging. Without a process group
every helper here acts on the one process, with no collective.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import DeviceError

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto", at: str = "device", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` (this process's GPU: ``local_rank``) or
    ``cuda:N`` as a torch.device; a device that is not on this machine is a DeviceError naming ``at``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{at} {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{at}={name} but CUDA is not available on this machine; use {at}=cpu")
        count = torch.cuda.device_count()
        if device.index is None:
            return torch.device("cuda", local_rank % max(1, count))
        if device.index >= count:
            raise DeviceError(f"{at}={name} but this machine has {count} CUDA device(s)")
    return device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float = 1800.0, at: str = "train.device") -> DistInfo:
    """Join the process group described by the environment (torchrun's RANK / WORLD_SIZE /
    LOCAL_RANK / MASTER_ADDR / MASTER_PORT); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank_ = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, at, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank_,
                                world_size=world, **kwargs)
        log.info("process group: %s, rank %d of %d, device %s", backend, rank_, world, dev)
    return DistInfo(rank_, world, local, dev)


def cleanup() -> None:
    """Leave the process group, if any."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether this process is in a process group."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0, and in a run of one process."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    """Where a tensor for a collective lives: NCCL reduces CUDA tensors, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_over_processes(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over all processes (a new tensor; ``value`` itself in one process)."""
    if not is_distributed():
        return value
    total = value.clone()
    dist.all_reduce(total)
    return total


def mean_over_processes(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average a dict of scalar tensors over all processes (one collective for the whole dict)."""
    if not values or not is_distributed():
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].float() for k in keys])
    dist.all_reduce(stacked)
    stacked /= world_size()
    return dict(zip(keys, stacked))


def gather_objects(mine) -> list:
    """Every process's ``mine`` (plain data), indexed by rank (collective)."""
    if not is_distributed():
        return [mine]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


@dataclass(frozen=True)
class Agreement:
    """What every process learnt from :func:`agree`: for each flag, the ranks that raised it, and
    the sum over processes of the number each gave."""

    raised: dict[str, tuple[int, ...]]
    total: float = 0.0

    def __getitem__(self, flag: str) -> tuple[int, ...]:
        return self.raised[flag]


def agree(flags: dict[str, bool], number: float = 0.0) -> Agreement:
    """One small collective after which every process knows every process's ``flags`` (and the
    sum of their ``number``), so that all take the same branch. Every process must call it with
    the same flag names in the same order."""
    names = list(flags)
    if not is_distributed():
        return Agreement({k: (0,) if flags[k] else () for k in names}, float(number))
    world, me = world_size(), rank()
    # one row per flag, one column per rank; the number travels in a last row of its own
    table = torch.zeros(len(names) + 1, world, dtype=torch.float64, device=_collective_device())
    for i, k in enumerate(names):
        table[i, me] = float(bool(flags[k]))
    table[-1, me] = float(number)
    dist.all_reduce(table)
    rows = table.cpu()
    raised = {k: tuple(r for r in range(world) if rows[i, r] > 0) for i, k in enumerate(names)}
    return Agreement(raised, float(rows[-1].sum()))
