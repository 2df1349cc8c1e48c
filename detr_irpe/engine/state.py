"""What a training checkpoint holds beyond the weights: random-number states and progress."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoint import CheckpointError, load_checkpoint


def rng_state() -> dict:
    """This process's random states (torch CPU and CUDA, numpy, Python) as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict]:
    """Every process's random states, indexed by rank (a resumed run restores its own)."""
    return gather_objects(rng_state())


def gather_objects(mine) -> list:
    """Every process's ``mine`` (plain data), indexed by rank (collective)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


#: the checkpoints a run resumes from: the one written after every epoch and the one a stop
#: signal writes mid-epoch (checkpoint_best.pth and checkpoint_nonfinite.pth are not resumed from)
CHECKPOINT_NAMES = ("checkpoint.pth", "checkpoint_interrupted.pth")


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint of a run folder that is furthest into training (epoch, then step within it)
    and loads; None when there is none. Progress, not modification time, decides: a run killed
    between writing one checkpoint and removing a stale one leaves both."""
    folder = Path(folder)
    found = []
    for path in (folder / name for name in CHECKPOINT_NAMES):
        if not path.is_file():
            continue
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            continue
        if "epoch" in ckpt and "optimizer" in ckpt:
            found.append(((int(ckpt["epoch"]), int(ckpt.get("step_in_epoch", 0)), path.stat().st_mtime_ns), path))
    return max(found)[1] if found else None
