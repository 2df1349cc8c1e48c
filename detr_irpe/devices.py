"""Device names of the command line and the config: auto, cpu, cuda, cuda:N."""

from __future__ import annotations

import torch

from .errors import DeviceError


def resolve_device(name: str = "auto", at: str = "device") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a torch.device; a CUDA
    device on a machine without one is a DeviceError naming ``at``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"{at} {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{at}={name} but CUDA is not available on this machine; use {at}=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{at}={name} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
