"""Processes on this machine joined in one gloo group, for the distributed tests."""

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, fn, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    fn(rank, *args)


def run_processes(world, fn, *args, timeout=240, allow_failure=False):
    """Run ``fn(rank, *args)`` in ``world`` spawned processes joined in one gloo group; fail the
    test instead of hanging when they do not finish in time."""
    ctx = mp.start_processes(_worker, args=(world, _free_port(), fn, args), nprocs=world, join=False, start_method="spawn")
    deadline = time.time() + timeout
    while True:
        try:
            if ctx.join(timeout=5):
                return
        except mp.ProcessExitedException:
            if not allow_failure:
                raise
            # a process died on purpose: wait for the others on their own
            while any(p.is_alive() for p in ctx.processes) and time.time() < deadline:
                time.sleep(1)
        if not any(p.is_alive() for p in ctx.processes):
            return
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{world} processes did not finish within {timeout} s")
