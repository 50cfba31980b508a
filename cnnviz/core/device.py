"""Device and thread selection: ``auto`` = CUDA if present, else MPS, else CPU."""

from __future__ import annotations

import os

import torch

from cnnviz.errors import CnnvizError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:1``/``mps``/``meta`` into a torch device that exists here."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise CnnvizError(f"unknown device '{device}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CnnvizError("device 'cuda' asked for, but no CUDA GPU is available here (use --device cpu)")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CnnvizError("device 'mps' asked for, but MPS is not available here (use --device cpu)")
    return resolved


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads (default: all cores)."""
    if threads is not None and threads < 1:
        raise CnnvizError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads or os.cpu_count() or 1)
