"""The machine a benchmark ran on (CPU model and flags, or GPU name; torch version; threads), and the
device-side helpers every benchmark shares: wait for the device, read its peak memory."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def describe(device: torch.device | str = "cpu") -> str:
    """One line: the device (GPU name, or CPU model with its vector/BF16 flags), torch version, threads."""
    from cnnviz.core.device import cpu_flags, native_bf16

    device = torch.device(device)
    present = [f for f in FLAGS if f in cpu_flags()]
    cpu = f"cpu: {cpu_model()}; flags: {' '.join(present) or 'none of ' + ','.join(FLAGS)}; native bf16: {native_bf16()}"
    gpu = f"gpu: {torch.cuda.get_device_name(device)}; " if device.type == "cuda" else ""
    return f"{gpu}{cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings on a GPU are meaningless without it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float:
    """Peak memory of this process so far: the GPU's allocated peak, or the CPU's resident peak (Linux KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    print(describe())
