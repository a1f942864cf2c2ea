"""Loading a network for embedding and extracting its per-layer activations batch by batch.

Three kinds of network are accepted (:func:`load_network`):

* a knntools checkpoint (``knntools train``), loaded with ``torch.load(weights_only=True)``;
* a TorchScript file (``torch.jit.save``): its ``forward`` returns logits, or a dict of tensors
  with a ``"logits"`` entry whose other entries are hidden layers (hooks do not reach inside
  compiled code);
* a torchvision classification model name with a local state-dict file (``--arch resnet18
  --weights file.pth``, loaded with ``weights_only=True``; ``{"state_dict": …}`` wrappers and
  ``module.`` prefixes are accepted). The class count comes from the weights; grey images are
  repeated to 3 channels *before* the (ImageNet, by default) per-channel normalisation, so
  ImageNet weights see exactly what they were trained on.
* a torchvision model with torchvision's own published weights by name (``--arch resnet50
  --weights DEFAULT``, ``IMAGENET1K_V2`` or ``ResNet50_Weights.IMAGENET1K_V2``): the weights
  come from torch hub's cache (``$TORCH_HOME/hub/checkpoints``, downloaded there when missing
  and online) and the network uses *their* preprocessing (``weights.transforms()``): the resize
  and centre crop become :attr:`Network.transform` (for folder image sets, applied by the
  DataLoader, images stay in [0, 1]) and the mean/std become :attr:`Network.normalization`.
  In-memory sets (cifar10, mnist …) keep their size and get the weights' mean/std only.

Layer naming
------------
Layers are module paths of the network (``model.get_submodule(name)``) captured with forward
hooks on the module's *output*: ``conv1`` of ``dknn-cnn`` is the output of ``model.conv1``
(Conv·ReLU). :func:`available_layers` lists the default layers in network order (see
:func:`knntools.models.registry.model_layers`); ``penultimate`` is the layer whose (flattened)
output feeds the final linear classifier; any other module path of ``named_modules()`` can be
asked for by name. Logits are always stored separately (dataset ``logits``).

Pooling
-------
``pool="none"`` stores a layer flattened (C·H·W values); ``"avg"``/``"max"`` reduce a conv map
[C, H, W] over its spatial axes to C values (token sequences [T, D] over T) to keep files small.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from knntools.errors import InputError, SchemaError

POOLS = ("none", "avg", "max")
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass
class Network:
    """A network ready to embed data.

    Attributes
    ----------
    module : torch.nn.Module or torch.jit.ScriptModule   in eval mode
    kind : str              "knntools" | "torchvision" | "torchscript"
    arch : str              registry/torchvision name, or "torchscript"
    input_shape : tuple     per-sample shape the network expects, e.g. (1, 28, 28)
    classes : list of str   output classes (empty when unknown: then the dataset's are used)
    normalization : dict    {"mean", "std"} applied after optional channel repetition
    repeat_channels : int   repeat a 1-channel input to this many channels first (0: never)
    model_uuid : str
    layers : list of str    default extractable layers in network order
    penultimate : str       the layer feeding the classifier ("" when unknown)
    checkpoint : dict       the knntools checkpoint ({} for other kinds)
    path : str              the model file, or the weights name (``ResNet50_Weights.IMAGENET1K_V2``)
    transform : callable    PIL image -> float32 [C, H, W] in [0, 1] for folder image sets (resize,
                            crop; None: the dataset's default for ``input_shape``)
    weights : str           torchvision weights name when loaded by name, else ""
    """

    module: Any
    kind: str
    arch: str
    input_shape: tuple[int, ...]
    classes: list[str]
    normalization: dict[str, list[float]]
    repeat_channels: int = 0
    model_uuid: str = ""
    layers: list[str] = field(default_factory=list)
    penultimate: str = ""
    checkpoint: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    transform: Any = None
    weights: str = ""

    @property
    def n_outputs(self) -> int | None:
        """Number of logits, or None when not known without a forward pass."""
        return len(self.classes) if self.classes else None


def _preprocess(net: Network, x: Any) -> Any:
    from knntools.models.training import Normalizer

    if net.repeat_channels and x.ndim == 4 and x.shape[1] == 1:
        x = x.expand(-1, net.repeat_channels, -1, -1)
    norm = getattr(net, "_norm", None)
    if norm is None or norm[0] != x.device:
        norm = (x.device, Normalizer(net.normalization, x.device))
        net._norm = norm  # type: ignore[attr-defined]
    return norm[1](x)


def forward_logits(net: Network, x: Any) -> Any:
    """Logits of ``net`` on raw inputs ``x`` (images in [0, 1]); differentiable w.r.t. ``x``."""
    out = net.module(_preprocess(net, x))
    if isinstance(out, dict):
        return out["logits"]
    return out


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def load_network(
    path: str | os.PathLike | None = None,
    *,
    arch: str | None = None,
    weights: str | os.PathLike | None = None,
    input_shape: Sequence[int] | None = None,
    normalization: dict[str, list[float]] | None = None,
) -> Network:
    """Load a knntools checkpoint, a TorchScript file, or a torchvision model with local weights.

    Parameters
    ----------
    path : path, optional
        A knntools checkpoint or TorchScript file (mutually exclusive with ``arch``/``weights``).
    arch, weights : optional
        torchvision model name and its state-dict file, or a torchvision weights name
        (``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet50_Weights.IMAGENET1K_V2``; see :func:`resolve_weights`).
    input_shape : sequence of int, optional
        Per-sample input shape of the data (needed for TorchScript and torchvision models).
    normalization : dict, optional
        Override of the input normalisation (TorchScript default: identity; torchvision: ImageNet).

    Raises
    ------
    InputError
        Missing files, bad combinations, unknown arch.
    SchemaError
        A file that is neither a knntools checkpoint nor TorchScript, or weights that do not fit.
    KnnToolsError
        Named weights neither in torch hub's cache nor downloadable (offline).
    """
    import torch

    from knntools.models import registry
    from knntools.models.checkpoint import is_torchscript, model_from_checkpoint, read_checkpoint

    if path is not None and (weights is not None):
        raise InputError("MODEL and --weights are exclusive; expected a checkpoint/TorchScript file, or --arch NAME --weights FILE")
    if path is None:
        if arch is None or weights is None:
            raise InputError("expected a MODEL file (knntools checkpoint or TorchScript), or --arch NAME --weights FILE")
        if not Path(weights).is_file() and arch in registry.torchvision_names() and _looks_like_weights_name(str(weights)):
            return _load_torchvision_named(arch, str(weights), input_shape, normalization)
        return _load_torchvision(arch, weights, input_shape, normalization)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if is_torchscript(p):
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:
            raise SchemaError(f"{p}: cannot load TorchScript ({str(exc).splitlines()[0][:160]})") from None
        module.eval()
        if input_shape is None:
            raise InputError(f"{p}: a TorchScript model needs --dataset to know its input shape")
        net = Network(module, "torchscript", "torchscript", tuple(int(s) for s in input_shape), [],
                      dict(normalization or {"mean": [], "std": []}), path=str(p))
        net.model_uuid = _file_uuid(p)
        with torch.no_grad():
            out = module(_preprocess(net, torch.zeros((2, *net.input_shape))))
        if isinstance(out, dict):
            if "logits" not in out:
                raise SchemaError(f"{p}: TorchScript forward returned a dict without 'logits' (keys: {', '.join(out)}); expected a 'logits' entry")
            net.layers = [k for k in out if k != "logits"]
            net.penultimate = net.layers[-1] if net.layers else ""
        elif not isinstance(out, torch.Tensor):
            raise SchemaError(f"{p}: TorchScript forward returned {type(out).__name__}; expected a logits tensor or a dict with 'logits'")
        return net
    ckpt = read_checkpoint(p, kind="model", expected="a model checkpoint written by `knntools train`, a TorchScript file, or --arch NAME --weights FILE")
    module = model_from_checkpoint(ckpt)
    net = Network(module, "knntools", str(ckpt["arch"]), tuple(int(s) for s in ckpt["input_shape"]), [str(c) for c in ckpt["classes"]],
                  dict(normalization or ckpt["normalization"]), 0, str(ckpt["provenance"].get("model_uuid", "")),
                  registry.model_layers(module), str(getattr(module, "knn_penultimate", "")), ckpt, str(p))
    return net


def _file_uuid(p: Path) -> str:
    """A stable id for an external model file: uuid5 of its SHA-256 (files carry no uuid)."""
    import hashlib
    import uuid

    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "sha256:" + h.hexdigest()))


def _load_torchvision(arch: str, weights: str | os.PathLike, input_shape: Sequence[int] | None, normalization: dict | None) -> Network:
    import torch
    import torchvision.models as tvm

    from knntools.models import registry

    if arch not in registry.torchvision_names():
        raise InputError(f"--arch {arch!r}: --weights needs a torchvision classification model name (e.g. resnet18, mobilenet_v3_large); "
                         f"knntools architectures are loaded from their checkpoints")
    wp = Path(weights)
    if not wp.is_file():
        raise InputError(f"--weights {wp}: no such file")
    if input_shape is None or len(input_shape) != 3:
        raise InputError(f"--arch {arch}: needs an image dataset (C, H, W); got {input_shape}")
    try:
        sd = torch.load(wp, map_location="cpu", weights_only=True)
    except Exception as exc:
        from knntools.models.checkpoint import load_error_reason

        raise SchemaError(f"--weights {wp}: refused: {load_error_reason(exc)}; expected a state dict saved with torch.save") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SchemaError(f"--weights {wp}: expected a state dict (parameter name → tensor)")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    probe = tvm.get_model(arch, weights=None)
    registry.annotate_layers(probe)
    key = f"{probe.knn_classifier}.weight"
    if key not in sd:
        raise SchemaError(f"--weights {wp}: no '{key}' tensor; expected a {arch} state dict")
    n_classes = int(sd[key].shape[0])
    model = tvm.get_model(arch, weights=None, num_classes=n_classes)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise SchemaError(f"--weights {wp}: does not fit {arch} ({str(exc).splitlines()[0][:200]})") from None
    registry.annotate_layers(model)
    model.eval()
    c = int(input_shape[0])
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    want = first.in_channels if first is not None else c
    repeat = want if (c == 1 and want != 1) else 0
    if c not in (1, want):
        raise InputError(f"--arch {arch}: the weights take {want} input channels but the dataset has {c}")
    norm = normalization or (IMAGENET_NORMALIZATION if want == 3 else {"mean": [], "std": []})
    net = Network(model, "torchvision", arch, tuple(int(s) for s in input_shape), [], dict(norm), repeat,
                  _file_uuid(wp), list(model.knn_layers), str(model.knn_penultimate), {}, str(wp))
    return net


def _looks_like_weights_name(text: str) -> bool:
    import re

    return re.fullmatch(r"([A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*", text) is not None


def resolve_weights(arch: str, name: str) -> Any:
    """The torchvision weights enum member for ``arch`` named ``name`` (nothing is downloaded).

    Parameters
    ----------
    arch : str    torchvision model name, e.g. ``resnet50``
    name : str    ``DEFAULT``, a member name (``IMAGENET1K_V2``) or ``ResNet50_Weights.IMAGENET1K_V2``

    Returns
    -------
    torchvision.models.WeightsEnum member (``.url``, ``.meta``, ``.transforms()``)

    Raises
    ------
    InputError
        ``arch`` has no published weights, or ``name`` is not one of them (the valid ones are listed).
    """
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        raise InputError(f"--arch {arch}: torchvision publishes no weights for it; expected a state-dict file as --weights") from None
    valid = ["DEFAULT", *[m.name for m in enum]]
    member = name.split(".", 1)[1] if "." in name else name
    if "." in name and name.split(".", 1)[0] != enum.__name__:
        raise InputError(f"--weights {name}: weights of another model; expected {enum.__name__}.<name> for --arch {arch} ({', '.join(valid)})")
    try:
        return enum[member]
    except KeyError:
        raise InputError(f"--weights {name}: no such file and not a weights name of {arch}; expected a state-dict file or one of {', '.join(valid)}") from None


def weights_preprocessing(weights: Any) -> tuple[Any, dict[str, list[float]], int]:
    """Split ``weights.transforms()`` into the image part and the normalisation (nothing downloaded).

    Returns
    -------
    transform : callable   PIL image or uint8/float tensor -> float32 [3, crop, crop] in [0, 1]:
        the weights' own resize (``resize_size``, its interpolation and antialias) and centre crop
    normalization : dict   ``{"mean": [...], "std": [...]}`` of the weights (applied by the network)
    crop : int             the crop size (input side)

    Raises
    ------
    InputError
        Weights whose preprocessing is not torchvision's ``ImageClassification`` preset.
    """
    from torchvision.transforms._presets import ImageClassification

    t = weights.transforms()
    if not isinstance(t, ImageClassification):
        raise InputError(f"--weights {weights}: preprocessing {type(t).__name__} is not an image-classification preset; expected a classification model's weights")
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    image_tf = ImageClassification(crop_size=crop, resize_size=resize, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                   interpolation=t.interpolation, antialias=t.antialias)
    return image_tf, {"mean": [float(v) for v in t.mean], "std": [float(v) for v in t.std]}, crop


def _load_torchvision_named(arch: str, name: str, input_shape: Sequence[int] | None, normalization: dict | None) -> Network:
    import uuid

    import torch
    import torchvision.models as tvm

    from knntools.errors import KnnToolsError
    from knntools.models import registry

    w = resolve_weights(arch, name)
    image_tf, norm, crop = weights_preprocessing(w)
    try:
        model = tvm.get_model(arch, weights=w)
    except Exception as exc:  # offline: URLError, HTTPError, OSError …
        fname = w.url.rsplit("/", 1)[-1]
        raise KnnToolsError(f"--weights {w}: not in torch hub's cache and cannot be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                            f"expected {Path(torch.hub.get_dir()) / 'checkpoints' / fname} (set TORCH_HOME), or a state-dict file as --weights") from None
    registry.annotate_layers(model)
    model.eval()
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else (3, crop, crop)
    if len(shape) != 3:
        raise InputError(f"--arch {arch}: needs an image dataset (C, H, W); got {shape}")
    if shape[0] not in (1, 3):
        raise InputError(f"--arch {arch}: the weights take 3 input channels but the dataset has {shape[0]}")
    transform = image_tf if input_shape is None else None
    return Network(model, "torchvision", arch, shape, [], dict(normalization or norm), 3 if shape[0] == 1 else 0,
                   str(uuid.uuid5(uuid.NAMESPACE_URL, w.url)), list(model.knn_layers), str(model.knn_penultimate), {}, str(w),
                   transform=transform, weights=str(w))


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------


def resolve_layers(net: Network, spec: str | Sequence[str]) -> list[str]:
    """Turn ``all`` | ``hidden`` | ``penultimate`` | ``none`` | ``NAME,…`` into hidden-layer names.

    Parsed by :func:`knntools.layerspec.resolve_layer_spec`. ``logits`` may appear in a list and is
    dropped (logits are always stored); ``all`` and ``hidden`` are the default hidden layers;
    ``none`` (or ``logits`` alone) gives ``[]``. Names must be default layers or (for
    ``nn.Module`` networks) any module path of ``named_modules()``.

    Raises
    ------
    InputError
        Unknown layer name (the message names the network and lists the valid ones), or
        ``penultimate`` on a network without a known penultimate layer.
    """
    from knntools.layerspec import resolve_layer_spec, split_spec

    if split_spec(spec) in (["none"], ["logits"]):
        return []
    modules: list[str] = []
    if net.kind != "torchscript":
        modules = [n for n, _ in net.module.named_modules() if n]
    hint = " (any module path of the network also works; `knntools embed MODEL --list-layers` lists them)" if modules else ""
    names = resolve_layer_spec(spec, [*net.layers, "logits"], penultimate=net.penultimate or None, logits="logits",
                               source=str(net.path or net.arch), extra=modules, hint=hint)
    return [n for n in names if n != "logits"]


def _pool(t: Any, pool: str) -> Any:
    if pool == "none" or t.ndim <= 2:
        return t.reshape(len(t), -1)
    axes = tuple(range(2, t.ndim)) if t.ndim == 4 else (1,)
    if pool == "avg":
        return t.float().mean(dim=axes)
    return t.float().amax(dim=axes)


@contextlib.contextmanager
def _hooks(net: Network, names: Sequence[str], store: dict[str, Any]) -> Iterator[None]:
    handles = []
    if net.kind != "torchscript":
        for name in names:
            module = net.module.get_submodule(name)

            def hook(_m: Any, _inp: Any, output: Any, _name: str = name) -> None:
                if isinstance(output, (tuple, list)):
                    output = output[0]
                store[_name] = output.detach()

            handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_layers(net: Network, x: Any, names: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """One no-grad forward pass: ``(logits [B, C], {name: raw layer output [B, ...]})``."""
    import torch

    store: dict[str, Any] = {}
    with torch.no_grad(), _hooks(net, names, store):
        out = net.module(_preprocess(net, x))
    if isinstance(out, dict):
        logits = out["logits"]
        for name in names:
            store[name] = out[name]
    else:
        logits = out
    missing = [n for n in names if n not in store]
    if missing:
        raise InputError(f"--layers: {', '.join(missing)} produced no output during the forward pass (module not used by {net.arch}'s forward)")
    return logits, store


def describe_layers(net: Network, names: Sequence[str] | None = None, pool: str = "none") -> list[dict[str, Any]]:
    """Shapes of layers from one forward pass of zeros.

    Returns
    -------
    list of dict
        ``{"name", "module", "shape" (per sample, before pooling), "dim" (values stored after
        ``pool``), "penultimate" (bool)}`` for each layer, then one entry for ``logits``.
    """
    import torch

    names = list(net.layers) if names is None else list(names)
    net.module.eval()
    logits, store = run_layers(net, torch.zeros((2, *net.input_shape)), names)
    rows = []
    for name in names:
        t = store[name]
        rows.append({"name": name, "module": name, "shape": [int(s) for s in t.shape[1:]], "dim": int(_pool(t, pool).shape[1]), "penultimate": name == net.penultimate})
    rows.append({"name": "logits", "module": getattr(net.module, "knn_classifier", "") or "output", "shape": [int(logits.shape[1])], "dim": int(logits.shape[1]), "penultimate": False})
    return rows


def iter_activations(
    net: Network,
    X: Any,
    names: Sequence[str],
    *,
    batch_size: int = 500,
    device: Any = "cpu",
    pool: str = "none",
    dtype: Any = np.float32,
    attack: str = "none",
    y_attack: np.ndarray | None = None,
    eps: float = 0.0,
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
    seed: int = 0,
    pgd_random_start: bool = True,
    rows: tuple[int, int] | None = None,
    workers: int = 0,
) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray]]:
    """Yield ``(start, {layer: array [b, d] of dtype}, logits float32 [b, C])`` batch by batch.

    Parameters
    ----------
    net : Network
    X : ndarray float32 [N, ...] (images in [0, 1]), or an image ``torch.utils.data.Dataset``
        (a :class:`knntools.io.datasets.StreamingDataset`'s ``X``), read by a ``DataLoader`` with
        ``workers`` worker processes in the dataset's fixed order
    names : layer names (see :func:`resolve_layers`)
    batch_size, device, pool, dtype : batching, placement, pooling and storage dtype
    attack, y_attack, eps, pgd_steps, pgd_step_size, seed, pgd_random_start : adversarial inputs (below);
        ``y_attack`` int64 [N] is indexed by absolute row
    rows : (start, stop), optional
        Embed only rows ``[start, stop)`` of ``X`` (default all), e.g. one shard. ``start``
        yielded is the absolute row number. Batches are always the aligned blocks
        ``[k * batch_size, (k + 1) * batch_size)`` of the full split: a range that starts or
        ends inside a block computes the whole block and keeps its rows, so every row goes
        through exactly the batch of the unsharded run and comes out bit-identical (same device,
        threads and batch size), at the cost of at most two extra partial batches.
    workers : int, default 0

    Memory is bounded by one batch of every layer (nothing accumulates), so the caller can stream
    the blocks to disk. With ``attack`` ∈ {"fgsm", "pgd"} each batch is first perturbed against
    ``y_attack`` (see :mod:`knntools.models.attacks`; eps in [0, 1] pixel units before normalisation);
    the PGD random start of the batch starting at absolute row ``s`` is drawn from a generator
    seeded with ``(seed, s // batch_size)``, so it does not depend on ``rows``.

    Raises
    ------
    InputError
        ``rows`` outside the split.
    """
    import torch

    from knntools.io.datasets import iter_batches
    from knntools.models.attacks import perturb

    n = len(X)
    a, b = (0, n) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= a <= b <= n:
        raise InputError(f"rows [{a}, {b}): outside the split's {n} rows; expected 0 <= start <= stop <= {n}")
    if a == b:
        return
    lo, hi = a // batch_size * batch_size, min(n, -(-b // batch_size) * batch_size)  # whole aligned batches
    device = torch.device(device)
    net.module.to(device)
    net.module.eval()
    for start, xb in iter_batches(X, batch_size, rows=(lo, hi), workers=workers, pin_memory=device.type == "cuda"):
        keep = slice(max(a - start, 0), min(b - start, len(xb)))
        xb = xb.to(device, torch.float32, non_blocking=True)
        if attack != "none":
            yb = torch.as_tensor(np.asarray(y_attack[start : start + len(xb)]), dtype=torch.long, device=device)
            gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + start // batch_size) % (2**63 - 1))
            xb = perturb(lambda z: forward_logits(net, z), xb, yb, attack, eps=eps, steps=pgd_steps, step_size=pgd_step_size,
                        random_start=pgd_random_start, generator=gen)
        logits, store = run_layers(net, xb, names)
        feats = {name: _pool(store[name], pool)[keep].float().cpu().numpy().astype(dtype, copy=False) for name in names}
        yield start + keep.start, feats, logits[keep].float().cpu().numpy()
