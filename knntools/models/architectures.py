"""Network architectures of the papers knntools reproduces, adapting to the input size and channels.

Every class here is a plain :class:`torch.nn.Module` whose hidden representations are the outputs
of *named top-level modules*; the instance attributes ``knn_layers`` (extractable layers in network
order), ``knn_penultimate`` (the layer whose flattened output is the input of the final linear
classifier) and ``knn_classifier`` (that classifier's name) tell :mod:`knntools.models.features`
where to hook. Layer names are the module paths (``conv1``, ``layer3``, ``pool`` …), so the HDF5
dataset ``layers/conv1`` of an activations file is the output of ``model.conv1``.

Input size adaptation: kernels larger than the current feature map are clipped to it, and pooling
steps are skipped once the map is 1×1, so every image architecture runs on 8×8 ``digits``,
28×28 MNIST-like sets and 32×32 CIFAR/SVHN alike (the published sizes are unchanged on the
images the papers used).

Architectures
-------------
``MLP``          Cohen et al. (2018) §3 "MLP-640": flatten · FC(d→640) · ReLU · FC(640→C).
``LeNet``        LeCun et al. (1998) LeNet-5 as used by Cohen et al.: conv 6 5×5 · pool · conv 16 5×5 ·
                 pool · FC 120 · FC 84 · FC C (ReLU, max-pool; padding 2 on inputs < 32 px).
``DkNNCNN``      Papernot & McDaniel (2018) MNIST network (Liu's report, Table I): Conv(64, 8×8, s2,
                 same) · Conv(128, 6×6, s2, valid) · Conv(128, 5×5, s1, valid) · Linear(C), ReLU.
``ResNet20``     He et al. (2016) CIFAR ResNet (6n+2 layers, 16/32/64 channels, option-A shortcuts),
                 kNet's preliminary network (Mizrahi & Avidan §4, 0.27M parameters).
``WideResNet``   Zagoruyko & Komodakis (2016) WRN-d-k (pre-activation wide basic blocks), Cohen et
                 al.'s WRN-28-10; ``depth``/``widen_factor`` kwargs for tiny test networks.
``VGG13``        Simonyan & Zisserman VGG-13 with batch norm, CIFAR variant (global average pool ·
                 FC C), used by LaSeNN (Schneider §4; default layer: third-last conv = ``conv8``).
``ResNet10``     ResNet with one BasicBlock per stage (64/128/256/512), CIFAR stem, used by LaSeNN
                 (default layer: output of the second-last BasicBlock = ``layer3``).
``FFN``          Tabular feed-forward network: FC · ReLU (· BatchNorm) (· Dropout) per hidden layer.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _clip(kernel: int, size: int) -> int:
    """Kernel size clipped to the feature-map size (at least 1)."""
    return max(1, min(int(kernel), int(size)))


def _pool_or_identity(size: int) -> tuple[nn.Module, int]:
    """2×2 max pooling while the map is at least 2 px, else identity; returns (module, new size)."""
    if size >= 2:
        return nn.MaxPool2d(2), size // 2
    return nn.Identity(), size


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``padding='same'`` amounts (before, after) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _flat_dim(input_shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in input_shape))


def _image_shape(input_shape: Sequence[int], arch: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        from knntools.errors import InputError

        raise InputError(f"architecture {arch}: needs image inputs of shape (C, H, W); got per-sample shape {tuple(input_shape)} (tabular data: use architecture ffn or mlp)", param="arch")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


class KnnModule(nn.Module):
    """Base class: ``knn_layers`` (hookable module names in network order), ``knn_penultimate``, ``knn_classifier``."""

    knn_layers: list[str]
    knn_penultimate: str
    knn_classifier: str


# ------------------------------------------------------------------------------------------
# Fully connected
# ------------------------------------------------------------------------------------------


class MLP(KnnModule):
    """Cohen et al.'s MLP-640: ``flatten · fc1 = FC(d→hidden)·ReLU · fc2 = FC(hidden→C)``.

    Parameters
    ----------
    input_shape : sequence of int    per-sample shape, flattened to d = prod(input_shape)
    n_classes : int
    hidden : int, default 640

    Layers: ``fc1`` (hidden, after ReLU; penultimate).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: int = 640):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(OrderedDict(linear=nn.Linear(_flat_dim(input_shape), int(hidden)), relu=nn.ReLU()))
        self.fc2 = nn.Linear(int(hidden), n_classes)
        self.knn_layers, self.knn_penultimate, self.knn_classifier = ["fc1"], "fc1", "fc2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.flatten(x)))


class FFN(KnnModule):
    """Tabular feed-forward network: ``fc<i> = FC·ReLU[·BatchNorm][·Dropout]`` per hidden size, then ``out``.

    Parameters
    ----------
    input_shape : sequence of int   flattened
    n_classes : int
    hidden : sequence of int, default (256, 128)
    dropout : float, default 0.0
    batch_norm : bool, default False

    Layers: ``fc1`` … ``fcL`` (penultimate: the last).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        hidden = [int(h) for h in (hidden if isinstance(hidden, (list, tuple)) else [hidden])]
        if not hidden:
            from knntools.errors import InputError

            raise InputError("architecture ffn: hidden: expected at least one hidden layer size", param="arch_kwargs")
        self.flatten = nn.Flatten()
        d = _flat_dim(input_shape)
        self.knn_layers = []
        for i, h in enumerate(hidden, 1):
            parts: "OrderedDict[str, nn.Module]" = OrderedDict(linear=nn.Linear(d, h), relu=nn.ReLU())
            if batch_norm:
                parts["bn"] = nn.BatchNorm1d(h)
            if dropout > 0:
                parts["dropout"] = nn.Dropout(float(dropout))
            setattr(self, f"fc{i}", nn.Sequential(parts))
            self.knn_layers.append(f"fc{i}")
            d = h
        self.out = nn.Linear(d, n_classes)
        self.knn_penultimate, self.knn_classifier = self.knn_layers[-1], "out"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for name in self.knn_layers:
            x = getattr(self, name)(x)
        return self.out(x)


# ------------------------------------------------------------------------------------------
# Small CNNs
# ------------------------------------------------------------------------------------------


class LeNet(KnnModule):
    """LeNet-5 (ReLU, max-pool): ``conv1 · conv2 · fc1(120) · fc2(84) · fc3(C)``.

    Layers: ``conv1`` (6 maps, after ReLU+pool), ``conv2`` (16 maps, after ReLU+pool), ``fc1``,
    ``fc2`` (penultimate). Inputs smaller than 32 px get padding 2 in conv1 (28×28 → 28×28).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int):
        super().__init__()
        c, h, _ = _image_shape(input_shape, "lenet")
        pad = 2 if h < 32 else 0
        k1 = _clip(5, h + 2 * pad)
        s = h + 2 * pad - k1 + 1
        p1, s = _pool_or_identity(s)
        self.conv1 = nn.Sequential(OrderedDict(conv=nn.Conv2d(c, 6, k1, padding=pad), relu=nn.ReLU(), pool=p1))
        k2 = _clip(5, s)
        s = s - k2 + 1
        p2, s = _pool_or_identity(s)
        self.conv2 = nn.Sequential(OrderedDict(conv=nn.Conv2d(6, 16, k2), relu=nn.ReLU(), pool=p2))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(OrderedDict(linear=nn.Linear(16 * s * s, 120), relu=nn.ReLU()))
        self.fc2 = nn.Sequential(OrderedDict(linear=nn.Linear(120, 84), relu=nn.ReLU()))
        self.fc3 = nn.Linear(84, n_classes)
        self.knn_layers, self.knn_penultimate, self.knn_classifier = ["conv1", "conv2", "fc1", "fc2"], "fc2", "fc3"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.conv2(self.conv1(x)))
        return self.fc3(self.fc2(self.fc1(x)))


class DkNNCNN(KnnModule):
    """The DkNN MNIST network (Papernot & McDaniel 2018; Liu's report Table I).

    ``conv1`` = Conv(64, 8×8, stride 2, TF-'same' padding)·ReLU, ``conv2`` = Conv(128, 6×6, stride 2,
    valid)·ReLU, ``conv3`` = Conv(128, 5×5, stride 1, valid)·ReLU, ``fc`` = Linear(C) on the flattened
    conv3 output. On 28×28 inputs the layers are 64×14×14 = 12,544-d, 128×5×5 = 3,200-d and
    128×1×1 = 128-d; ``conv3`` is the penultimate layer (its flattened output feeds ``fc``).
    Kernels are clipped to the map size on smaller inputs (8×8 digits: 64×4×4, 128×1×1, 128×1×1).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, width: int = 64):
        super().__init__()
        c, h, w = _image_shape(input_shape, "dknn-cnn")
        w1, w2 = int(width), 2 * int(width)
        ph, pw = _same_padding(h, 8, 2), _same_padding(w, 8, 2)
        k1 = _clip(8, min(h, w))
        self.conv1 = nn.Sequential(OrderedDict(
            pad=nn.ZeroPad2d((pw[0], pw[1], ph[0], ph[1])), conv=nn.Conv2d(c, w1, k1, stride=2), relu=nn.ReLU()))
        s = (h + sum(ph) - k1) // 2 + 1
        k2 = _clip(6, s)
        self.conv2 = nn.Sequential(OrderedDict(conv=nn.Conv2d(w1, w2, k2, stride=2), relu=nn.ReLU()))
        s = (s - k2) // 2 + 1
        k3 = _clip(5, s)
        self.conv3 = nn.Sequential(OrderedDict(conv=nn.Conv2d(w2, w2, k3, stride=1), relu=nn.ReLU()))
        s = s - k3 + 1
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w2 * s * s, n_classes)
        self.knn_layers, self.knn_penultimate, self.knn_classifier = ["conv1", "conv2", "conv3"], "conv3", "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.conv3(self.conv2(self.conv1(x)))))


# ------------------------------------------------------------------------------------------
# ResNets
# ------------------------------------------------------------------------------------------


class _PadShortcut(nn.Module):
    """Option-A shortcut of the CIFAR ResNet: subsample by 2 and zero-pad the new channels."""

    def __init__(self, extra: int, stride: int):
        super().__init__()
        self.extra, self.stride = int(extra), int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """ResNet basic block: conv3×3·BN·ReLU·conv3×3·BN + shortcut, ReLU.

    ``shortcut="A"``: parameter-free subsample + zero-pad (CIFAR ResNet-20); ``"B"``: 1×1 conv + BN.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = _PadShortcut(planes - in_planes, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stem(c: int, planes: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(c, planes, 3, padding=1, bias=False), bn=nn.BatchNorm2d(planes), relu=nn.ReLU()))


def _gap() -> nn.Sequential:
    return nn.Sequential(OrderedDict(avg=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()))


class ResNet20(KnnModule):
    """CIFAR ResNet (He et al. 2016 §4.2): depth = 6n+2, stages of 16/32/64 channels, option-A shortcuts.

    Parameters
    ----------
    depth : int, default 20   (6n+2: 8, 14, 20, 32, 44, 56 …)
    width : int, default 16   channels of the first stage (doubled per stage)

    Layers: ``conv1`` (stem), ``layer1``, ``layer2``, ``layer3``, ``pool`` (global average, 4·width-d;
    penultimate), classifier ``fc``.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, depth: int = 20, width: int = 16):
        super().__init__()
        c, _, _ = _image_shape(input_shape, "resnet20")
        if (int(depth) - 2) % 6 != 0 or depth < 8:
            from knntools.errors import InputError

            raise InputError(f"architecture resnet20: depth {depth}: expected 6n+2 (8, 14, 20, 32, …)", param="arch_kwargs")
        n = (int(depth) - 2) // 6
        w = int(width)
        self.conv1 = _stem(c, w)
        planes = w
        for i, (out_planes, stride) in enumerate(((w, 1), (2 * w, 2), (4 * w, 2)), 1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(planes, out_planes, stride if j == 0 else 1, shortcut="A"))
                planes = out_planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.pool = _gap()
        self.fc = nn.Linear(planes, n_classes)
        self.knn_layers, self.knn_penultimate, self.knn_classifier = ["conv1", "layer1", "layer2", "layer3", "pool"], "pool", "fc"
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.pool(x))


class ResNet10(KnnModule):
    """ResNet-10 (LaSeNN, Schneider §4): CIFAR stem, one BasicBlock per stage (64/128/256/512), 1×1 shortcuts.

    Parameters
    ----------
    blocks : sequence of 4 int, default (1, 1, 1, 1)
    width : int, default 64   channels of the first stage (doubled per stage)

    Layers: ``conv1``, ``layer1`` … ``layer4``, ``pool`` (penultimate, 8·width-d), classifier ``fc``.
    LaSeNN's default layer "output of the second-last BasicBlock" is ``layer3``.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, blocks: Sequence[int] = (1, 1, 1, 1), width: int = 64):
        super().__init__()
        c, _, _ = _image_shape(input_shape, "resnet10")
        w = int(width)
        self.conv1 = _stem(c, w)
        planes = w
        for i, (nb, mult, stride) in enumerate(zip(blocks, (1, 2, 4, 8), (1, 2, 2, 2)), 1):
            layer = []
            for j in range(int(nb)):
                layer.append(BasicBlock(planes, w * mult, stride if j == 0 else 1, shortcut="B"))
                planes = w * mult
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.pool = _gap()
        self.fc = nn.Linear(planes, n_classes)
        self.knn_layers, self.knn_penultimate, self.knn_classifier = ["conv1", "layer1", "layer2", "layer3", "layer4", "pool"], "pool", "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.fc(self.pool(x))


class _WideBlock(nn.Module):
    """Pre-activation wide basic block: BN·ReLU·conv3×3·(dropout)·BN·ReLU·conv3×3 + shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.dropout(F.relu(self.bn2(y))))
        sc = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(o)
        return y + sc


class WideResNet(KnnModule):
    """Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), Cohen et al.'s WRN-28-10.

    Parameters
    ----------
    depth : int, default 28        6n+4 (10, 16, 22, 28, 40 …)
    widen_factor : int, default 10 stage widths 16k, 32k, 64k
    dropout : float, default 0.0

    Layers: ``conv1``, ``layer1``, ``layer2``, ``layer3``, ``pool`` (BN·ReLU·global average,
    64k-d; penultimate), classifier ``fc``.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0):
        super().__init__()
        c, _, _ = _image_shape(input_shape, "wide-resnet")
        if (int(depth) - 4) % 6 != 0 or depth < 10:
            from knntools.errors import InputError

            raise InputError(f"architecture wide-resnet: depth {depth}: expected 6n+4 (10, 16, 22, 28, 40 …)", param="arch_kwargs")
        n, k = (int(depth) - 4) // 6, int(widen_factor)
        self.conv1 = nn.Sequential(OrderedDict(conv=nn.Conv2d(c, 16, 3, padding=1, bias=False)))
        planes = 16
        for i, (out_planes, stride) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 2)), 1):
            blocks = []
            for j in range(n):
                blocks.append(_WideBlock(planes, out_planes, stride if j == 0 else 1, float(dropout)))
                planes = out_planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.pool = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(planes), relu=nn.ReLU(), avg=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()))
        self.fc = nn.Linear(planes, n_classes)
        self.knn_layers, self.knn_penultimate, self.knn_classifier = ["conv1", "layer1", "layer2", "layer3", "pool"], "pool", "fc"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.pool(x))


class VGG13(KnnModule):
    """VGG-13 with batch norm, CIFAR variant (LaSeNN, Schneider §4).

    ``conv1`` … ``conv10`` = conv3×3·BN·ReLU (64, 64, 128, 128, 256, 256, 512, 512, 512, 512 channels
    × ``width_mult``), 2×2 max pooling after conv2/4/6/8/10 (``pool1`` … ``pool5``, skipped once the
    map is 1×1), then ``pool`` = global average (penultimate) and ``fc``. Layers: conv1 … conv10, pool;
    the hook on ``conv<i>`` sees its output before the following max pool. LaSeNN's default layer
    "third-last convolutional layer" is ``conv8``.
    """

    CFG = (64, 64, 128, 128, 256, 256, 512, 512, 512, 512)

    def __init__(self, input_shape: Sequence[int], n_classes: int, width_mult: float = 1.0):
        super().__init__()
        c, h, _ = _image_shape(input_shape, "vgg13")
        s = h
        self.order: list[str] = []
        planes = c
        for i, width in enumerate(self.CFG, 1):
            w = max(1, int(round(width * float(width_mult))))
            setattr(self, f"conv{i}", nn.Sequential(OrderedDict(conv=nn.Conv2d(planes, w, 3, padding=1, bias=False), bn=nn.BatchNorm2d(w), relu=nn.ReLU())))
            self.order.append(f"conv{i}")
            planes = w
            if i % 2 == 0:
                pool, s = _pool_or_identity(s)
                setattr(self, f"pool{i // 2}", pool)
                self.order.append(f"pool{i // 2}")
        self.pool = _gap()
        self.fc = nn.Linear(planes, n_classes)
        self.knn_layers = [f"conv{i}" for i in range(1, 11)] + ["pool"]
        self.knn_penultimate, self.knn_classifier = "pool", "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        return self.fc(self.pool(x))
