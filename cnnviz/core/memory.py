"""Estimate the memory a run needs before it starts, and refuse one that cannot fit.

A forward pass to the deepest layer keeps every layer's output for the backward pass, and the
backward pass needs about as much again for their gradients; so a run needs about twice the sum of
all layer outputs up to that layer, which grows with the number of pixels. That sum is measured once
on a probe image of at most 64 px a side and scaled to the run's size, at 2 bytes a value where the
forward is autocast to bf16/fp16 and 4 in fp32; the image-sized fp32 tensors the run keeps (an
optimizer's state: the engine says how many, ``cnnviz.optim.settings.state_images``) come on top.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from cnnviz.core.device import release_freed_memory
from cnnviz.core.hooked import HookedModel
from cnnviz.core.layers import LOGITS
from cnnviz.errors import CnnvizError

PROBE = 64
BACKWARD_FACTOR = 2.0
WORKING_IMAGES = 4
"""Image-sized fp32 tensors a run without an optimizer keeps (the image, its gradient, copies)."""


def values_per_pixel(model: HookedModel, layers: Sequence[str], probe: tuple[int, int] = (PROBE, PROBE)) -> float:
    """Layer-output values per input pixel for a forward pass to the deepest of ``layers``, measured on
    a blank image of shape ``probe``."""
    names = model.table.names()
    wanted = [name for name in layers if name != LOGITS]
    deepest = len(names) if LOGITS in layers or not wanted else max(names.index(model.table.get(n).name) for n in wanted) + 1
    with torch.no_grad():
        parameter = next(model.net.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.float32
        acts = model(torch.zeros(1, 3, *probe, device=model.device, dtype=dtype), names[:deepest])
    return sum(a.numel() for a in acts.values()) / (probe[0] * probe[1])


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (None where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    release_freed_memory()
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def needed_bytes(
    model: HookedModel, layers: Sequence[str], shape: tuple[int, int], state_images: int = WORKING_IMAGES, batch: int = 1,
) -> int:
    """Bytes a forward + backward pass of ``batch`` images of ``shape`` needs, with ``state_images``
    image-sized fp32 tensors per image (an optimizer's state) on top."""
    pixels = shape[0] * shape[1]
    probe = (min(shape[0], PROBE), min(shape[1], PROBE))
    parameter = next(model.net.parameters(), None)
    value_bytes = (model.autocast or (parameter.dtype if parameter is not None else torch.float32)).itemsize
    activations = BACKWARD_FACTOR * batch * values_per_pixel(model, layers, probe) * pixels * value_bytes
    return int(activations + batch * state_images * 3 * pixels * 4)


def check_fits(
    model: HookedModel, layers: Sequence[str], shape: tuple[int, ...], state_images: int = WORKING_IMAGES, batch: int = 1,
) -> None:
    """Refuse a run that will not fit in free memory, naming the largest long side that would.
    ``shape`` ends with (H, W); ``state_images``: see ``needed_bytes``."""
    free = available_bytes(model.device)
    if free is None:
        return
    shape = tuple(shape[-2:])
    need = needed_bytes(model, layers, shape, state_images, batch)
    if need <= free:
        return
    fits = int(max(shape) * math.sqrt(free / need))
    raise CnnvizError(
        f"a {shape[1]}x{shape[0]} px run on {model.name} needs about {need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB "
        f"are free on {model.device.type}: use --size {fits // 8 * 8} or less"
    )
