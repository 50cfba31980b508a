"""Device and thread selection: ``auto`` = CUDA if present, else MPS, else CPU."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

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


def check_threads(threads: int | None) -> None:
    """A thread count must be at least 1 (None: all cores)."""
    if threads is not None and threads < 1:
        raise CnnvizError(f"--threads must be at least 1, got {threads}")


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads (default: all cores)."""
    check_threads(threads)
    torch.set_num_threads(threads or os.cpu_count() or 1)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread: a CPU result then does not depend on how many cores the process has
    (a reduction split across threads rounds differently), so two machines or engines compute the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of unmapping it (Linux; elsewhere a no-op).

    glibc serves every allocation over 32 MiB with a fresh mmap and unmaps it on free, so each
    evaluation's large activations and gradients fault in every 4 KiB page anew: on a 2-core CPU
    that costs 10-20% of a 512 px evaluation. Served from the heap, and not trimmed below 1 GiB, the
    pages are reused. True if glibc took the settings.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> None:
    """Hand the memory this process freed but kept (``keep_freed_memory``) back to the system, so that
    the system's count of free memory is true again (before estimating whether a run fits)."""
    if keep_freed_memory.cache_info().currsize and keep_freed_memory():
        ctypes.CDLL("libc.so.6").malloc_trim(0)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. on macOS)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether the CPU computes BF16 natively (AMX or AVX512-BF16); without it bf16 is slower than fp32."""
    return not cpu_flags().isdisjoint({"amx_bf16", "avx512_bf16"})


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision that does not exist or that ``device`` cannot run."""
    if precision not in PRECISIONS:
        raise CnnvizError(f"unknown precision '{precision}' (choices: {', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type != "cuda":
        raise CnnvizError(f"--precision fp16 needs a CUDA GPU, not {device.type} (use bf16 or fp32)")


def bf16_tensor_cores(device: torch.device) -> bool:
    """Whether the CUDA GPU ``device`` has bf16 tensor cores (compute capability 8.0, Ampere, or later)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the network's forward is autocast to for ``precision`` on ``device`` (None: plain fp32).

    ``auto`` is bf16 where the hardware computes it natively, and fp32 elsewhere: on a CPU with AMX or
    AVX512-BF16, and on a GPU with bf16 tensor cores, where it is the faster of the two (the measurements:
    benchmarks/RESULTS.md).
    """
    check_precision(precision, device)
    if precision == "auto":
        native = native_bf16() if device.type == "cpu" else device.type == "cuda" and bf16_tensor_cores(device)
        return torch.bfloat16 if native else None
    return _DTYPES[precision]
