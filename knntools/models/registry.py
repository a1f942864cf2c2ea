"""Model registry: architecture name → constructor adapting to the dataset's input shape and classes.

Names
-----
``mlp``, ``lenet``, ``dknn-cnn``, ``resnet20``, ``wide-resnet``, ``vgg13``, ``resnet10``, ``ffn``
(see :mod:`knntools.models.architectures`), and any torchvision classification model by name
(``resnet18``, ``resnet34``, ``mobilenet_v3_large``, ``convnext_tiny`` …, the names of
``torchvision.models.list_models(module=torchvision.models)``), built untrained with
``num_classes = n_classes`` and its first 3-channel convolution replaced to take the dataset's
channels.

Layers of a model
-----------------
:func:`model_layers` returns the extractable layers in network order: the ``layers`` attribute of
knntools architectures; for torchvision models the top-level child modules except single
conv/BN/activation/pool/dropout leaves and the classifier (e.g. resnet18: ``layer1`` … ``layer4``,
``avgpool``), plus the module whose output feeds the last ``nn.Linear`` (the penultimate layer,
e.g. mobilenet_v3_large's ``classifier.2``). Any other module path of ``model.named_modules()``
can be extracted by name too (``--layers layer3.1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from knntools.errors import InputError


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture.

    Attributes
    ----------
    name : str
    builder : callable(input_shape, n_classes, **kwargs) -> nn.Module
    inputs : str            "image" (needs (C, H, W)) or "any" (flattened)
    summary : str           one line for help texts
    reference : str         paper / section
    test_kwargs : dict      a tiny configuration for fast tests
    """

    name: str
    builder: Callable[..., Any]
    inputs: str
    summary: str
    reference: str
    test_kwargs: dict = field(default_factory=dict)


def _archs() -> dict[str, ArchSpec]:
    from knntools.models import architectures as A

    specs = [
        ArchSpec("mlp", A.MLP, "any", "MLP-640: FC(d→640)·ReLU·FC(640→C)", "Cohen et al. 2018 §3", {"hidden": 16}),
        ArchSpec("lenet", A.LeNet, "image", "LeNet-5 (ReLU, max pool)", "LeCun et al. 1998; Cohen et al. 2018 §3", {}),
        ArchSpec("dknn-cnn", A.DkNNCNN, "image", "DkNN MNIST CNN: Conv64 8×8 s2 same, Conv128 6×6 s2, Conv128 5×5, Linear", "Papernot & McDaniel 2018; Liu, Table I", {"width": 4}),
        ArchSpec("resnet20", A.ResNet20, "image", "CIFAR ResNet-20 (6n+2, option-A shortcuts)", "He et al. 2016 §4.2; kNet §4", {"depth": 8, "width": 4}),
        ArchSpec("wide-resnet", A.WideResNet, "image", "Wide ResNet WRN-28-10 (depth, widen_factor kwargs)", "Zagoruyko & Komodakis 2016; Cohen et al. 2018", {"depth": 10, "widen_factor": 1}),
        ArchSpec("vgg13", A.VGG13, "image", "VGG-13 with BN, CIFAR variant", "Simonyan & Zisserman 2014; LaSeNN §4", {"width_mult": 0.0625}),
        ArchSpec("resnet10", A.ResNet10, "image", "ResNet-10 (one BasicBlock per stage)", "LaSeNN §4", {"width": 4}),
        ArchSpec("ffn", A.FFN, "any", "tabular feed-forward net (hidden, dropout, batch_norm kwargs)", "—", {"hidden": [16, 8]}),
    ]
    return {s.name: s for s in specs}


ARCHS: dict[str, ArchSpec] = {}


def registered() -> dict[str, ArchSpec]:
    """The knntools architectures by name (lazy: torch is imported on first use)."""
    if not ARCHS:
        ARCHS.update(_archs())
    return ARCHS


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def arch_names() -> list[str]:
    """Registered knntools architecture names (torchvision names are accepted in addition)."""
    return list(registered())


def check_arch(arch: str) -> str:
    """Validate an architecture name; returns ``"knntools"`` or ``"torchvision"``.

    Raises
    ------
    InputError
        Unknown name (the message lists the valid ones).
    """
    if arch in registered():
        return "knntools"
    if arch in torchvision_names():
        return "torchvision"
    raise InputError(f"architecture {arch!r}: unknown; expected one of {', '.join(arch_names())} "
                     f"or a torchvision classification model (e.g. resnet18, resnet34, mobilenet_v3_large, convnext_tiny)", param="arch")


def build_model(arch: str, input_shape: Sequence[int], n_classes: int, **kwargs: Any) -> Any:
    """Build an untrained model.

    Parameters
    ----------
    arch : str
        A registered name or a torchvision classification model name.
    input_shape : sequence of int
        Per-sample input shape: (C, H, W) for images, (D,) for tables.
    n_classes : int
    **kwargs
        Architecture keyword arguments (e.g. ``depth=10, widen_factor=1`` for ``wide-resnet``).

    Returns
    -------
    torch.nn.Module
        With attributes ``knn_layers`` (list of str), ``knn_penultimate`` (str) and ``knn_classifier`` (str)
        set (see :func:`model_layers`).

    Raises
    ------
    InputError
        Unknown architecture, an image architecture on tabular data, or bad kwargs.
    """
    source = check_arch(arch)
    shape = tuple(int(s) for s in input_shape)
    if source == "knntools":
        spec = registered()[arch]
        if spec.inputs == "image" and len(shape) != 3:
            raise InputError(f"architecture {arch}: needs image inputs (C, H, W); the dataset has per-sample shape {shape} (tabular data: use architecture ffn or mlp)", param="arch")
        try:
            model = spec.builder(shape, int(n_classes), **kwargs)
        except TypeError as exc:
            raise InputError(f"architecture {arch}: bad keyword arguments ({exc})", param="arch_kwargs") from None
        return model
    if len(shape) != 3:
        raise InputError(f"architecture {arch}: torchvision models need image inputs (C, H, W); got per-sample shape {shape}", param="arch")
    import torchvision.models as tvm

    try:
        model = tvm.get_model(arch, weights=None, num_classes=int(n_classes), **kwargs)
    except TypeError as exc:
        raise InputError(f"architecture {arch}: bad keyword arguments ({exc})", param="arch_kwargs") from None
    adapt_input_channels(model, shape[0])
    annotate_layers(model)
    return model


def adapt_input_channels(model: Any, channels: int, weight: Any = None) -> None:
    """Replace the first 3-channel ``Conv2d`` of ``model`` by one taking ``channels`` channels.

    With pretrained weights (``weight`` = its [O, 3, k, k] tensor, or the current weight) a
    1-channel conv gets the sum over the RGB filters, which equals feeding the grey image three
    times. No-op when ``channels == 3`` or the model has no 3-channel first conv.
    """
    import torch
    from torch import nn

    if channels == 3:
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != 3 or module.groups != 1:
                return
            new = nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, 1, module.bias is not None, module.padding_mode)
            w = module.weight if weight is None else weight
            with torch.no_grad():
                if channels == 1:
                    new.weight.copy_(w.sum(dim=1, keepdim=True))
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, leaf, new)
            return


_LEAF_SKIP = ("Conv2d", "BatchNorm2d", "ReLU", "ReLU6", "Hardswish", "SiLU", "GELU", "MaxPool2d", "Dropout", "Identity", "Flatten", "LocalResponseNorm")


def annotate_layers(model: Any) -> None:
    """Set ``knn_layers``, ``knn_penultimate`` and ``knn_classifier`` on a model not built by knntools.

    ``classifier`` is the last ``nn.Linear`` module (by registration order); ``penultimate`` the
    module that precedes it (its previous sibling, else the parent's previous sibling), whose output
    is the classifier's input; ``layers`` the top-level children that are not single
    conv/BN/activation/pool/dropout leaves, up to the classifier, then the penultimate layer.
    """
    from torch import nn

    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    classifier = linears[-1] if linears else ""
    penultimate = ""
    if classifier:
        path = classifier
        while path and not penultimate:
            parent_name, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            names = [n for n, _ in parent.named_children()]
            i = names.index(leaf)
            if i > 0:
                penultimate = f"{parent_name}.{names[i - 1]}" if parent_name else names[i - 1]
            else:
                path = parent_name
    top = classifier.split(".")[0] if classifier else None
    layers = []
    for name, child in model.named_children():
        if name == top:
            break
        if type(child).__name__ in _LEAF_SKIP:
            continue
        layers.append(name)
    if penultimate and penultimate not in layers:
        layers.append(penultimate)
    model.knn_layers, model.knn_penultimate, model.knn_classifier = layers, penultimate, classifier


def model_layers(model: Any) -> list[str]:
    """Extractable layer names of ``model`` in network order (see module docstring)."""
    layers = getattr(model, "knn_layers", None)
    if layers is None:
        annotate_layers(model)
        layers = model.knn_layers
    return list(layers)
