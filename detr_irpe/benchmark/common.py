"""Timing, memory measurement and table printing shared by the benchmarks."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from typing import Callable

import torch


def machine_description(device: torch.device) -> str:
    """A one-line description of where the figures come from."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or "cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int = 5,
                     warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, the variants interleaved round by round so that
    machine noise hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _peak_child(setup, args, queue):
    torch.set_num_threads(args[-1])
    step = setup(*args[:-1])
    try:  # reset the high-water mark to the current resident size (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = _status_kib("VmRSS")
    step()
    queue.put(max(0, _status_kib("VmHWM") - base) * 1024)


def peak_memory(setup: Callable, args: tuple, device: torch.device) -> float:
    """Peak memory in MiB of one call of ``setup(*args)()`` above what was allocated before it:
    on CUDA the allocator's peak; on the CPU the resident-set high-water mark of a fresh process."""
    if device.type == "cuda":
        step = setup(*args)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(setup, args + (torch.get_num_threads(),), queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value / 2**20


def print_table(title: str, columns: list[str], rows: list[list], as_json: bool = False, extra: dict | None = None):
    """Print a Markdown table (or one JSON object with the rows)."""
    if as_json:
        print(json.dumps({"title": title, **(extra or {}), "rows": [dict(zip(columns, r)) for r in rows]}, indent=1))
        return
    print(f"\n{title}")
    if extra:
        for k, v in extra.items():
            print(f"{k}: {v}")
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return str(value)
