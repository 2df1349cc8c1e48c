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


#: the phases of a training step, as the step functions label them (torch.profiler.record_function)
PHASES = ("forward", "loss", "backward", "optimizer")
#: profiler event names counted per step: values read back to the host, waits for the device,
#: kernel launches (runtime and driver API) and host-device copies
_COUNTED = {
    "scalar reads (item, float, bool)": ("aten::_local_scalar_dense",),
    "device syncs": ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"),
    "kernel launches": ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"),
    "copies": ("cudaMemcpyAsync", "cudaMemcpy"),
}


def _under_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def profile_step(step: Callable[[], None], device: torch.device, title: str, phases=PHASES, steps: int = 3,
                 top: int = 25, warmup: int = 2, as_json: bool = False) -> list[list]:
    """Profile ``steps`` calls of ``step`` after ``warmup`` calls and print where a call goes:
    host time per phase (the ``record_function`` ranges named in ``phases``), the device's busy
    time against the wall time, counts of host syncs, launches and copies, and the operators
    with the most self time. Returns the phase rows."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall = (time.perf_counter() - t0) / steps
    events = prof.events()
    host = {name: sum(e.cpu_time_total for e in events if e.name == name) / steps / 1e3 for name in phases}
    averages = prof.key_averages()
    counts = {label: sum(a.count for a in averages if a.key in names) / steps for label, names in _COUNTED.items()}
    if device.type != "cuda":
        counts = {k: v for k, v in counts.items() if k.startswith("scalar")}
    # outermost operators: on a GPU each launches one kernel or more; on the CPU the count that
    # stands in for launches
    counts["operators (outermost aten calls)"] = sum(
        1 for e in events if e.name.startswith("aten::") and not _under_aten(e)) / steps
    device_busy = sum(a.self_device_time_total for a in averages) / steps / 1e3
    rows = [[name, ms, 100 * ms / (wall * 1e3)] for name, ms in host.items()]
    extra = {"wall ms/step (under the profiler)": f"{wall * 1e3:.1f}",
             **{f"{label} per step": f"{n:g}" for label, n in counts.items()}}
    if device.type == "cuda":
        extra["device busy ms/step"] = f"{device_busy:.1f} ({100 * device_busy / (wall * 1e3):.0f}% of the wall time)"
    print_table(title, ["phase", "host ms/step", "% of wall"], rows, as_json, extra)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    if as_json:
        ops = sorted(averages, key=lambda a: a.self_device_time_total if device.type == "cuda" else a.self_cpu_time_total,
                     reverse=True)[:top]
        print(json.dumps({"title": f"{title}: top operators", "rows": [
            {"name": a.key, "calls/step": a.count / steps, "self cpu ms/step": a.self_cpu_time_total / steps / 1e3,
             "self device ms/step": a.self_device_time_total / steps / 1e3} for a in ops]}, indent=1))
    else:
        print(f"\ntop operators by self {'device' if device.type == 'cuda' else 'CPU'} time, {steps} steps:")
        print(averages.table(sort_by=sort, row_limit=top, max_name_column_width=60))
    return rows
