"""Print the CPU model, its vector/BF16 flags and torch's thread count: every benchmark starts with it."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma")


def describe() -> str:
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    present = [f for f in FLAGS if f in flags]
    return f"cpu: {model}; flags: {' '.join(present) or 'none of ' + ','.join(FLAGS)}; torch {torch.__version__}, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    print(describe())
