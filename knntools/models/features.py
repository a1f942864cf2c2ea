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
        raise InputError("a model file and weights are exclusive; expected a checkpoint/TorchScript file, or an architecture name with weights", param="weights")
    if path is None:
        if arch is None or weights is None:
            raise InputError("no model: expected a model file (knntools checkpoint or TorchScript), or an architecture name with weights",
                             param="weights" if arch is not None else "arch" if weights is not None else None)
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
            raise InputError(f"{p}: a TorchScript model does not record its input shape; expected a dataset to take it from", param="dataset")
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
    ckpt = read_checkpoint(p, kind="model", expected="a model checkpoint written by `knntools train`, a TorchScript file, or an architecture name with weights")
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
        raise InputError(f"architecture {arch!r}: weights need a torchvision classification model name (e.g. resnet18, mobilenet_v3_large); "
                         f"knntools architectures are loaded from their checkpoints", param="arch")
    wp = Path(weights)
    if not wp.is_file():
        raise InputError(f"weights {wp}: no such file", param="weights")
    if input_shape is None or len(input_shape) != 3:
        raise InputError(f"architecture {arch}: needs an image dataset (C, H, W); got {input_shape}", param="arch")
    try:
        sd = torch.load(wp, map_location="cpu", weights_only=True)
    except Exception as exc:
        from knntools.models.checkpoint import load_error_reason

        raise SchemaError(f"weights {wp}: refused: {load_error_reason(exc)}; expected a state dict saved with torch.save", param="weights") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SchemaError(f"weights {wp}: expected a state dict (parameter name → tensor)", param="weights")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    probe = tvm.get_model(arch, weights=None)
    registry.annotate_layers(probe)
    key = f"{probe.knn_classifier}.weight"
    if key not in sd:
        raise SchemaError(f"weights {wp}: no '{key}' tensor; expected a {arch} state dict", param="weights")
    n_classes = int(sd[key].shape[0])
    model = tvm.get_model(arch, weights=None, num_classes=n_classes)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise SchemaError(f"weights {wp}: does not fit {arch} ({str(exc).splitlines()[0][:200]})", param="weights") from None
    registry.annotate_layers(model)
    model.eval()
    c = int(input_shape[0])
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    want = first.in_channels if first is not None else c
    repeat = want if (c == 1 and want != 1) else 0
    if c not in (1, want):
        raise InputError(f"architecture {arch}: the weights take {want} input channels but the dataset has {c}", param="arch")
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
        raise InputError(f"architecture {arch}: torchvision publishes no weights for it; expected a state-dict file as weights", param="weights") from None
    valid = ["DEFAULT", *[m.name for m in enum]]
    member = name.split(".", 1)[1] if "." in name else name
    if "." in name and name.split(".", 1)[0] != enum.__name__:
        raise InputError(f"weights {name}: weights of another model; expected {enum.__name__}.<name> for architecture {arch} ({', '.join(valid)})", param="weights")
    try:
        return enum[member]
    except KeyError:
        raise InputError(f"weights {name}: no such file and not a weights name of {arch}; expected a state-dict file or one of {', '.join(valid)}", param="weights") from None


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
        raise InputError(f"weights {weights}: preprocessing {type(t).__name__} is not an image-classification preset; expected a classification model's weights", param="weights")
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
        raise KnnToolsError(f"weights {w}: not in torch hub's cache and cannot be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                            f"expected {Path(torch.hub.get_dir()) / 'checkpoints' / fname} (set TORCH_HOME), or a state-dict file as weights") from None
    registry.annotate_layers(model)
    model.eval()
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else (3, crop, crop)
    if len(shape) != 3:
        raise InputError(f"architecture {arch}: needs an image dataset (C, H, W); got {shape}", param="arch")
    if shape[0] not in (1, 3):
        raise InputError(f"architecture {arch}: the weights take 3 input channels but the dataset has {shape[0]}", param="arch")
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
    hint = " (any module path of the network also works, as listed by its named_modules())" if modules else ""
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
        raise InputError(f"layers {', '.join(missing)}: produced no output during the forward pass (module not used by {net.arch}'s forward)", param="layers")
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


# ------------------------------------------------------------------------------------------
# Embedding a dataset split into an activations file (what `knntools embed` runs)
# ------------------------------------------------------------------------------------------


@dataclass
class EmbedPlan:
    """A network, a dataset split and what to store: the input of :func:`write_activations`.

    Attributes
    ----------
    net : Network
    data : Dataset or None
        The split (:mod:`knntools.io.datasets`); None when planned with ``list_only``.
    names : list of str
        Hidden layers to store (logits are stored separately).
    shapes : list of dict
        :func:`describe_layers` rows of ``names``, then ``logits``.
    store_logits : bool
        False when the network's logit count differs from the dataset's classes.
    labels_train, labels_clean : ndarray int64 [N]
        Labels the network was trained with (a labels file, the checkpoint's ``train_labels`` for
        its own training split, else the dataset's) and the dataset's true labels.
    labels_source : str
    parents : list of str
        Provenance parents (model uuid, labels file uuid).
    attack, eps, pgd_steps, pgd_step_size, pgd_random_start, pool, dtype
        As given to :func:`plan_embedding`.
    attack_params : dict
        The attack's parameters as stored (empty without an attack).
    attrs : dict
        Root attributes of the activations file.
    warnings : list of str
        Things the caller should tell the user (e.g. logits not stored).
    """

    net: Network
    data: Any = None
    names: list[str] = field(default_factory=list)
    shapes: list[dict[str, Any]] = field(default_factory=list)
    store_logits: bool = True
    labels_train: Any = None
    labels_clean: Any = None
    labels_source: str = "dataset"
    parents: list[str] = field(default_factory=list)
    attack: str = "none"
    eps: float | None = None
    pgd_steps: int = 10
    pgd_step_size: float | None = None
    pgd_random_start: bool = True
    attack_params: dict[str, Any] = field(default_factory=dict)
    pool: str = "none"
    dtype: str = "float32"
    attrs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _embedding_labels(plan: EmbedPlan, labels: Any, ckpt_prov: dict[str, Any]) -> None:
    """Fill ``plan``'s labels: a labels file, else the checkpoint's own training labels, else the dataset's."""
    from knntools.io.h5 import KFile

    data, ckpt = plan.data, plan.net.checkpoint
    plan.labels_clean = plan.labels_train = data.y
    if labels is not None:
        with KFile(labels, "labels") as lf:
            if lf.n_samples != data.n_samples:
                raise InputError(f"{labels}: labels: {lf.n_samples} rows but {data.name}/{data.split} has {data.n_samples}; expected a labels file for this split")
            if lf.n_classes and lf.n_classes != data.n_classes:
                raise InputError(f"{labels}: classes: {lf.n_classes} classes but {data.name} has {data.n_classes}")
            plan.labels_train = lf.read_labels("labels")
            plan.labels_source = f"labels file {labels} ({lf.uuid})"
            plan.parents.append(lf.uuid)
    elif ckpt and "train_labels" in ckpt and data.split == "train" and data.name == ckpt_prov.get("dataset"):
        tl = ckpt["train_labels"].numpy().astype(np.int64)
        if len(tl) == data.n_samples:
            plan.labels_train = tl
            plan.labels_source = f"checkpoint train_labels (labels file uuid {ckpt_prov.get('labels_uuid')})"
            if ckpt_prov.get("labels_uuid"):
                plan.parents.append(str(ckpt_prov["labels_uuid"]))


def plan_embedding(
    model: str | os.PathLike | None = None,
    *,
    arch: str | None = None,
    weights: str | None = None,
    normalization: dict[str, list[float]] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    download: bool = False,
    label_column: str | None = None,
    layers: str | Sequence[str] = "all",
    pool: str = "none",
    dtype: str = "float32",
    labels: str | os.PathLike | None = None,
    attack: str = "none",
    eps: float | None = None,
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
    pgd_random_start: bool = True,
    list_only: bool = False,
) -> EmbedPlan:
    """Load a network and a dataset split, resolve the layers and labels to store.

    Parameters
    ----------
    model : path, optional
        A knntools checkpoint or TorchScript file; or None with ``arch`` and ``weights``
        (see :func:`load_network`).
    arch, weights, normalization
        See :func:`load_network`.
    dataset : str, optional
        Dataset name or table file; default: the checkpoint's training dataset (and its
        ``data_dir`` when that folder exists), else ``"digits"``.
    data_dir, split, download, label_column
        Passed to :func:`knntools.io.datasets.load_dataset` / ``load_table``.
    layers : str or sequence, default "all"
        Layer spec of :func:`resolve_layers` (``all | hidden | penultimate | NAME[,NAME...]``;
        ``logits`` or ``none`` store the logits only).
    pool : {"none", "avg", "max"}, default "none"
    dtype : {"float32", "float16"}, default "float32"
        Storage dtype of hidden layers (logits stay float32).
    labels : path, optional
        A ``labels`` file (``knntools noise``) for this split, stored as ``labels``.
    attack : {"none", "fgsm", "pgd"}, default "none"
    eps, pgd_steps, pgd_step_size, pgd_random_start
        Attack budget (L-inf, [0, 1] pixel units) and PGD settings (:mod:`knntools.models.attacks`).
    list_only : bool, default False
        Only load the network (no dataset for a knntools checkpoint): for listing its layers.

    Returns
    -------
    EmbedPlan

    Raises
    ------
    InputError
        Missing model file, unknown layer, a split whose input shape or class count does not fit
        the network, a labels file of another split, an attack on tabular data or on a network
        whose logits do not match the classes.
    SchemaError
        A model file that is neither a knntools model checkpoint nor TorchScript.
    """
    from knntools.io import datasets as dsets
    from knntools.models.checkpoint import is_torchscript

    is_ckpt = model is not None and Path(model).is_file() and not is_torchscript(model)
    if model is not None and not Path(model).is_file():
        raise InputError(f"{model}: no such file")
    ckpt_prov: dict[str, Any] = {}
    net = None
    if is_ckpt:
        net = load_network(model, arch=arch, weights=weights, normalization=normalization)
        ckpt_prov = dict(net.checkpoint["provenance"])
    if dataset is None:
        dataset = ckpt_prov.get("dataset_path") or ckpt_prov.get("dataset") or "digits"
        if data_dir is None and ckpt_prov.get("data_dir") and Path(ckpt_prov["data_dir"]).is_dir():
            data_dir = Path(ckpt_prov["data_dir"])
    is_table = Path(str(dataset)).suffix.lower() in (".csv", ".npz", ".h5", ".hdf5")
    is_folder = str(dataset) in dsets.FOLDER_SETS  # streamed; images sized by the model (below)

    def load_data(net: Network | None = None) -> Any:
        if is_table:
            return dsets.load_table(dataset, label_column=label_column)
        if is_folder and net is not None:  # the weights' own resize/crop, else S×S of the model's input
            return dsets.load_dataset(dataset, split=split, data_dir=data_dir, transform=net.transform, image_size=int(net.input_shape[-1]))
        return dsets.load_dataset(dataset, split=split, data_dir=data_dir, download=download)

    data = None
    if net is None:
        input_shape = None
        if is_folder:  # named weights: their crop size; other external models: 224×224 RGB
            named = weights is not None and not Path(weights).is_file()
            input_shape = None if named else (3, dsets.DEFAULT_IMAGE_SIZE, dsets.DEFAULT_IMAGE_SIZE)
        else:
            data = load_data()
            input_shape = data.input_shape
        net = load_network(model, arch=arch, weights=weights, input_shape=input_shape, normalization=normalization)
    plan = EmbedPlan(net=net, pool=pool, dtype=dtype, attack=attack, eps=eps, pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
                     pgd_random_start=pgd_random_start, parents=[net.model_uuid] if net.model_uuid else [])
    if list_only:
        return plan
    plan.names = names = resolve_layers(net, layers)
    plan.data = data = data if data is not None else load_data(net)
    if tuple(data.input_shape) != tuple(net.input_shape):
        raise InputError(f"{net.path}: the model takes inputs of shape {tuple(net.input_shape)} but {data.name}/{data.split} has {tuple(data.input_shape)}; expected the dataset it was trained on")
    classes = list(net.classes) or list(data.classes)
    if net.classes and len(net.classes) != data.n_classes:
        raise InputError(f"{net.path}: the model has {len(net.classes)} classes but {data.name} has {data.n_classes}; expected the same classes")
    if attack != "none" and data.kind != "image":
        raise InputError(f"attack {attack}: needs image inputs in [0, 1]; {data.name} is tabular")
    plan.shapes = describe_layers(net, names, pool=pool)
    n_logits = plan.shapes[-1]["dim"]
    if n_logits != data.n_classes:
        if attack != "none":
            raise InputError(f"attack {attack}: the model outputs {n_logits} logits but {data.name} has {data.n_classes} classes; expected matching classes")
        plan.warnings.append(f"the model outputs {n_logits} logits but {data.name} has {data.n_classes} classes; logits are not stored")
        classes = list(data.classes)
    plan.store_logits = n_logits == data.n_classes
    _embedding_labels(plan, labels, ckpt_prov)
    if attack != "none":
        plan.attack_params = {"eps": float(eps), "norm": "linf", "targeted": False, "labels": "labels_clean",
                              "input_range": "[0, 1] pixels before normalisation", "clip": [0.0, 1.0]}
        if attack == "pgd":
            plan.attack_params.update({"steps": int(pgd_steps), "step_size": float(pgd_step_size if pgd_step_size is not None else 2.5 * float(eps) / pgd_steps),
                                       "random_start": bool(pgd_random_start)})
    plan.attrs = {
        "classes": classes, "layer_order": names, "penultimate": net.penultimate if net.penultimate in names else (names[-1] if names else None),
        "dataset": data.name, "split": data.split, "model_uuid": net.model_uuid, "model_arch": net.arch, "model_kind": net.kind,
        "model_path": str(Path(net.path).resolve()) if net.path and not net.weights else (net.weights or None), "attack": attack, "attack_params": plan.attack_params,
        "pooling": pool, "layer_dtype": dtype, "labels_source": plan.labels_source,
        "normalization": net.normalization, "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
    }
    return plan


def write_activations(plan: EmbedPlan, dest: str | os.PathLike, *, rows: tuple[int, int] | None = None, attrs: dict[str, Any] | None = None,
                      batch_size: int = 500, device: Any = "cpu", seed: int = 0, workers: int = 0, force: bool = False,
                      on_batch: Any = None) -> dict[str, Any]:
    """Stream ``plan``'s layers for rows ``[start, stop)`` of its split into an ``activations`` file.

    Writes (through :func:`knntools.io.h5.create`, atomically) ``layers/<name>`` [n, d] of
    ``plan.dtype``, ``logits`` float32 [n, C] (when stored), ``labels`` / ``labels_clean`` / ``ids``
    int64 [n], and the root attributes ``plan.attrs`` plus ``attrs`` (e.g. shard attributes).
    Memory stays at one batch (see :func:`iter_activations`, which also fixes the batches, so a
    row range gives bit-identical rows to the whole-split run).

    Parameters
    ----------
    plan : EmbedPlan
        From :func:`plan_embedding`.
    dest : path
        Output ``.h5``.
    rows : (start, stop), optional
        Default: the whole split.
    attrs : dict, optional
        Extra root attributes.
    batch_size, device, seed, workers
        Passed to :func:`iter_activations` (``seed``: PGD random starts; also the file's ``seed``).
    force : bool, default False
        Overwrite an existing ``dest``.
    on_batch : callable, optional
        Called with the number of rows of each batch written.

    Returns
    -------
    dict
        ``{"uuid", "n_samples", "correct", "correct_vs_labels"}``: the file's uuid and the number of
        rows whose logits' argmax equals ``labels_clean`` / ``labels`` (0 without logits).

    Raises
    ------
    InputError
        Existing ``dest`` without ``force``, ``rows`` outside the split.
    KnnToolsError
        Non-finite activations (float16 overflow).
    """
    from knntools.errors import KnnToolsError
    from knntools.io.h5 import create, create_stream, write_array

    data = plan.data
    a, b = (0, data.n_samples) if rows is None else (int(rows[0]), int(rows[1]))
    n = b - a
    labels_clean = np.asarray(plan.labels_clean)[a:b]
    labels_train = np.asarray(plan.labels_train)[a:b]
    np_dtype = np.float32 if plan.dtype == "float32" else np.float16
    n_logits = plan.shapes[-1]["dim"]
    counts = {"clean": 0, "train": 0}
    with create(dest, "activations", parents=plan.parents, seed=seed, attrs={**plan.attrs, **(attrs or {})}, force=force) as f:
        streams = {}
        for row in plan.shapes[:-1]:
            streams[row["name"]] = create_stream(f, f"layers/{row['name']}", (n, row["dim"]), np_dtype,
                                                 attrs={"shape": row["shape"] if plan.pool == "none" else [row["dim"]], "module": row["module"],
                                                        "pooling": plan.pool, "shape_unpooled": row["shape"]})
        logits_ds = create_stream(f, "logits", (n, n_logits), np.float32) if plan.store_logits else None
        for abs_start, feats, logits in iter_activations(
            plan.net, data.X, plan.names, batch_size=batch_size, device=device, pool=plan.pool, dtype=np_dtype, attack=plan.attack,
            y_attack=np.asarray(plan.labels_clean), eps=float(plan.eps or 0.0), pgd_steps=plan.pgd_steps, pgd_step_size=plan.pgd_step_size,
            seed=seed, pgd_random_start=plan.pgd_random_start, workers=workers, rows=(a, b),
        ):
            start = abs_start - a  # iter_activations yields rows of the whole split
            stop = start + len(logits)
            for name, block in feats.items():
                if not np.isfinite(block).all():
                    raise KnnToolsError(f"layer '{name}': non-finite activations in rows {start}..{stop - 1} (float16 overflow? store them as float32)")
                streams[name][start:stop] = block
            if logits_ds is not None:
                logits_ds[start:stop] = logits
                pred = logits.argmax(1)
                counts["clean"] += int((pred == labels_clean[start:stop]).sum())
                counts["train"] += int((pred == labels_train[start:stop]).sum())
            if on_batch is not None:
                on_batch(len(logits))
        write_array(f, "labels", np.asarray(labels_train, dtype=np.int64))
        write_array(f, "labels_clean", np.asarray(labels_clean, dtype=np.int64))
        write_array(f, "ids", np.asarray(np.asarray(data.ids)[a:b], dtype=np.int64))
        if plan.store_logits and n:
            f.attrs["accuracy"] = float(counts["clean"] / n)
        return {"uuid": str(f.attrs["uuid"]), "n_samples": n, "correct": counts["clean"], "correct_vs_labels": counts["train"]}
