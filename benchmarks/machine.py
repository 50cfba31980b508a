"""The machine a benchmark ran on (CPU model and flags, or GPU name; torch version; threads), and the
device-side helpers every benchmark shares: wait for the device, read its peak memory."""

from __future__ import annotations

import os
import platform
import resource
import time
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
    """Peak memory of this process so far: the GPU's allocated peak, or the CPU's resident peak.

    On Linux it is VmHWM: ``ru_maxrss`` carries the parent's peak over ``exec``, so a worker started by a
    big benchmark process would report its parent's.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _busy_seconds() -> float:
    """CPU seconds all processes have run since boot (Linux /proc/stat), or 0 where unknown."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    idle = int(fields[3]) + int(fields[4])
    return (sum(int(f) for f in fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Others:
    """The share of the CPUs that other processes used while a measurement ran: on a shared machine,
    figures taken while it is well above zero are not the machine's."""

    def __enter__(self) -> Others:
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *_: object) -> None:
        wall, busy, own = (now - then for now, then in zip((time.perf_counter(), _busy_seconds(), _own_seconds()), self._start))
        self.share = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))


def _own_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


if __name__ == "__main__":
    print(describe())
