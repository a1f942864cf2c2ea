"""``knntools embed``: run a model over a dataset split and stream its activations to an HDF5 file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import BatchSize, DataDir, Device, Download, Force, Json, LabelColumn, NumThreads, OptOutputPath, Quiet, Seed, Split, Verbose, Workers
from knntools.cli._output import Output

HELP = """Run a network over a dataset split and stream its layer activations to an `activations` file.

Stores the chosen hidden layers, the logits, the labels the network was trained with, the true
labels and the row ids.

MODEL is a knntools checkpoint (`knntools train`) or a TorchScript file; a torchvision model with a
local state dict works too (--arch resnet18 --weights file.pth), or with torchvision's published
weights by name (--arch resnet50 --weights DEFAULT | IMAGENET1K_V2 | ResNet50_Weights.IMAGENET1K_V2,
from torch hub's cache) and then that model's own preprocessing (weights.transforms()).
Folder image sets (--dataset imagefolder --data-dir DIR, imagenet) are streamed through a
DataLoader with --workers processes. --dataset/--data-dir default to
what the checkpoint was trained on. Layers are module paths (dknn-cnn: conv1, conv2, conv3; see
--list-layers); conv maps are stored flat or pooled (--pool avg|max). Batches are streamed to disk,
so memory does not grow with the dataset. --attack fgsm|pgd --eps E embeds adversarial inputs
(L-inf, eps in [0, 1] pixel units before normalisation, against the true labels).

Sharded: --shard I/N embeds only rows [I*n//N, (I+1)*n//N) of the split into an ordinary
activations file carrying shard attributes (run shards as separate jobs, e.g. a SLURM array, then
`knntools merge`). Under torchrun (`torchrun --nproc-per-node N -m knntools embed ... -o set.h5`)
rank I embeds shard I/N into set-0000I-of-0000N.h5 beside -o, and rank 0 then writes -o as a set
of HDF5 virtual datasets over the parts, which every command opens like one file. The rows are
the same as the unsharded run's (PGD's random start excepted). If a rank fails, no set is written
and the other ranks remove the parts of the run.

Reads: MODEL; a dataset split (--dataset, --data-dir) or a features/.csv/.npz table.
Writes: layers/<name> float32|float16 [N, D] (attrs shape, module, pooling), logits float32 [N, C],
labels int64 [N] (as trained on), labels_clean int64 [N], ids int64 [N]; root attrs layer_order,
penultimate, classes, dataset, split, model_uuid, model_arch, attack, attack_params.
"""

EPILOG = """Examples:

  knntools embed model.pt --list-layers

  knntools embed model.pt --split train --layers all -o train.h5

  knntools embed model.pt --split test --layers conv2,conv3 --pool avg --dtype float16 -o test.h5

  knntools embed model.pt --split test --attack fgsm --eps 0.25 -o test_fgsm.h5

  knntools embed --arch resnet18 --weights resnet18.pth --dataset cifar10 --split test --layers penultimate -o test.h5

  knntools embed --arch resnet50 --weights DEFAULT --dataset imagefolder --data-dir photos/ --split test --layers penultimate --workers 4 -o photos.h5

  knntools embed model.pt --split train --shard 0/2 -o part0.h5

  torchrun --standalone --nproc-per-node 2 -m knntools embed model.pt --split test -o test_set.h5
"""


def _parse_floats(text: Optional[str], option: str) -> list[float]:
    from knntools.utils import parse_float_list

    return parse_float_list(text, option) if text else []


@handle_errors("embed")
def embed_cli(
    model: Annotated[Optional[Path], typer.Argument(help="knntools checkpoint (.pt) or TorchScript file; omit with --arch/--weights.", dir_okay=False)] = None,
    output: OptOutputPath = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name or .csv/.npz/.h5 table (default: the checkpoint's training dataset, else digits).")] = None,
    data_dir: DataDir = None,
    download: Download = False,
    split: Split = "train",
    label_column: LabelColumn = None,
    layers: Annotated[str, typer.Option("--layers", help="all | penultimate | none | NAME,NAME,… (logits are always stored).")] = "all",
    list_layers: Annotated[bool, typer.Option("--list-layers", help="List the model's layers (name, shape, stored size) and exit.")] = False,
    pool: Annotated[str, typer.Option("--pool", help="none (flatten) | avg | max: reduce conv maps over their spatial axes.")] = "none",
    dtype: Annotated[str, typer.Option("--dtype", help="Storage dtype of layers: float32 | float16 (logits stay float32).")] = "float32",
    attack: Annotated[str, typer.Option("--attack", help="none | fgsm | pgd: embed adversarial versions of the inputs.")] = "none",
    eps: Annotated[Optional[float], typer.Option("--eps", help="Attack L-inf budget in [0, 1] pixel units (before normalisation).", min=0.0)] = None,
    pgd_steps: Annotated[int, typer.Option("--pgd-steps", help="PGD iterations.", min=1)] = 10,
    pgd_step_size: Annotated[Optional[float], typer.Option("--pgd-step-size", help="PGD step size (default 2.5*eps/steps).", min=0.0)] = None,
    pgd_random_start: Annotated[bool, typer.Option("--pgd-random-start/--no-pgd-random-start", help="PGD: start from a random point of the eps-ball (seeded).")] = True,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="A `noise` labels file whose labels are stored as `labels` (default: the labels the checkpoint was trained with, for its training split).", dir_okay=False)] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="With --weights: a torchvision classification model name.")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="With --arch: a state-dict file (torch.load weights_only=True), or torchvision weights by name (DEFAULT, IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V2) used with their own preprocessing.")] = None,
    mean: Annotated[Optional[str], typer.Option("--mean", help="Override input normalisation mean per channel, e.g. 0.5,0.5,0.5 (TorchScript default: none; torchvision: ImageNet).")] = None,
    std: Annotated[Optional[str], typer.Option("--std", help="Override input normalisation std per channel.")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: embed only shard I of N of the split (rows [I*n//N, (I+1)*n//N)); join the parts with `knntools merge`. Under torchrun the rank and world size choose the shard.")] = None,
    batch_size: BatchSize = 500,
    workers: Workers = 0,
    device: Device = "auto",
    num_threads: NumThreads = 0,
    seed: Seed = 0,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    import time

    import numpy as np

    from knntools.errors import InputError
    from knntools.io.h5 import check_output_path
    from knntools.models.attacks import ATTACKS
    from knntools.models.features import POOLS

    out = Output("embed", json_mode=json_, quiet=quiet, verbose=verbose)
    # ---- cheap validation ---------------------------------------------------------------------
    if pool not in POOLS:
        raise InputError(f"--pool {pool!r}: expected one of {', '.join(POOLS)}")
    if dtype not in ("float32", "float16"):
        raise InputError(f"--dtype {dtype!r}: expected float32 or float16")
    if attack not in ATTACKS:
        raise InputError(f"--attack {attack!r}: expected one of {', '.join(ATTACKS)}")
    if attack != "none" and eps is None:
        raise InputError(f"--attack {attack}: expected --eps E (L-inf budget in [0, 1] pixel units, e.g. 0.25)")
    if attack == "none" and eps is not None:
        raise InputError("--eps: only with --attack fgsm|pgd")
    if model is None and (arch is None or weights is None):
        raise InputError("expected MODEL (a knntools checkpoint or TorchScript file), or --arch NAME --weights FILE")
    if model is not None and weights is not None:
        raise InputError("MODEL and --weights are exclusive")
    if (mean is None) != (std is None):
        raise InputError("--mean and --std: give both or neither")
    norm_override = None
    if mean is not None:
        m, s = _parse_floats(mean, "--mean"), _parse_floats(std, "--std")
        if len(m) != len(s) or any(v <= 0 for v in s):
            raise InputError(f"--mean/--std: {len(m)} means and {len(s)} stds; expected equally many, stds > 0")
        norm_override = {"mean": m, "std": s}
    from knntools.distributed import env_info
    from knntools.io.shards import parse_shard_spec, part_path

    dinfo = env_info()
    shard_spec = parse_shard_spec(shard) if shard is not None else None
    if shard_spec is not None and dinfo.distributed:
        raise InputError(f"--shard {shard}: not allowed under torchrun (WORLD_SIZE={dinfo.world_size}), where the rank and world size choose the shard; expected one or the other")
    if dinfo.distributed:
        shard_spec = (dinfo.rank, dinfo.world_size)
        if not dinfo.is_main:  # rank 0 alone prints messages and results
            out = Output("embed", json_mode=False, quiet=True, verbose=verbose)
    if not list_layers:
        if output is None:
            raise InputError("-o/--output: expected an output .h5 path (or --list-layers)")
        if dinfo.is_main:  # under torchrun rank 0 checks the set and every part (one error line, not one per rank)
            check_output_path(output, force)
            for i in range(dinfo.world_size if dinfo.distributed else 0):
                check_output_path(part_path(output, i, dinfo.world_size), force)

    import torch

    from knntools.io import datasets as dsets
    from knntools.io.h5 import KFile, create, create_stream, write_array
    from knntools.models.checkpoint import is_torchscript, load_checkpoint
    from knntools.models.features import describe_layers, iter_activations, load_network, resolve_layers
    from knntools.utils import resolve_device

    dev = resolve_device(device)
    if num_threads:
        torch.set_num_threads(num_threads)

    # ---- which dataset -------------------------------------------------------------------------
    ckpt_prov: dict = {}
    is_ckpt = model is not None and model.is_file() and not is_torchscript(model)
    if model is not None and not model.is_file():
        raise InputError(f"{model}: no such file")
    if is_ckpt:
        ckpt_prov = dict(load_checkpoint(model)["provenance"])
    if dataset is None:
        dataset = ckpt_prov.get("dataset_path") or ckpt_prov.get("dataset") or "digits"
        if data_dir is None and ckpt_prov.get("data_dir") and Path(ckpt_prov["data_dir"]).is_dir():
            data_dir = Path(ckpt_prov["data_dir"])
    is_table = Path(str(dataset)).suffix.lower() in (".csv", ".npz", ".h5", ".hdf5")
    is_folder = str(dataset) in dsets.FOLDER_SETS  # streamed; images sized by the model (below)

    def load_data(net=None):
        if is_table:
            return dsets.load_table(dataset, label_column=label_column)
        if is_folder and net is not None:  # the weights' own resize/crop, else S×S of the model's input
            return dsets.load_dataset(dataset, split=split, data_dir=data_dir, transform=net.transform, image_size=int(net.input_shape[-1]))
        return dsets.load_dataset(dataset, split=split, data_dir=data_dir, download=download)

    data = None
    input_shape = None
    if not is_ckpt and is_folder:  # named weights: their crop size; other external models: 224×224 RGB
        named = weights is not None and not Path(weights).is_file()
        input_shape = None if named else (3, dsets.DEFAULT_IMAGE_SIZE, dsets.DEFAULT_IMAGE_SIZE)
    elif not is_ckpt:
        data = load_data()
        input_shape = data.input_shape
    net = load_network(model, arch=arch, weights=weights, input_shape=input_shape, normalization=norm_override)

    if list_layers:
        rows = describe_layers(net, pool=pool)
        out.info(f"[bold]{net.path}[/bold]: {net.arch} ({net.kind}), input {tuple(net.input_shape)}; layers in network order"
                 + (f", penultimate = {net.penultimate}" if net.penultimate else ""))
        out.table(None, ["name", "shape", "dim", "penultimate"], [(r["name"], "×".join(map(str, r["shape"])), r["dim"], "yes" if r["penultimate"] else "") for r in rows])
        if net.kind != "torchscript":
            out.info("Any module path of the network can be named too (e.g. a block inside a stage); --layers all takes the rows above.")
        out.result({"command": "embed", "model": net.path, "arch": net.arch, "kind": net.kind, "input_shape": list(net.input_shape),
                    "penultimate": net.penultimate, "pool": pool, "layers": rows})
        return

    names = resolve_layers(net, layers)
    if data is None:
        data = load_data(net)
    if tuple(data.input_shape) != tuple(net.input_shape):
        raise InputError(f"{net.path}: the model takes inputs of shape {tuple(net.input_shape)} but {data.name}/{data.split} has {tuple(data.input_shape)}; expected the dataset it was trained on")
    classes = list(net.classes) or list(data.classes)
    if net.classes and len(net.classes) != data.n_classes:
        raise InputError(f"{net.path}: the model has {len(net.classes)} classes but {data.name} has {data.n_classes}; expected the same classes")
    if attack != "none" and data.kind != "image":
        raise InputError(f"--attack {attack}: needs image inputs in [0, 1]; {data.name} is tabular")
    shapes = describe_layers(net, names, pool=pool)
    n_logits = shapes[-1]["dim"]
    if n_logits != data.n_classes:
        if attack != "none":
            raise InputError(f"--attack {attack}: the model outputs {n_logits} logits but {data.name} has {data.n_classes} classes; expected matching classes")
        out.warn(f"the model outputs {n_logits} logits but {data.name} has {data.n_classes} classes; logits are not stored")
        classes = list(data.classes)

    # ---- labels --------------------------------------------------------------------------------
    labels_clean = data.y
    labels_train = data.y
    labels_source = "dataset"
    parents = [net.model_uuid] if net.model_uuid else []
    ckpt = net.checkpoint
    if labels is not None:
        with KFile(labels, "labels") as lf:
            if lf.n_samples != data.n_samples:
                raise InputError(f"{labels}: labels: {lf.n_samples} rows but {data.name}/{data.split} has {data.n_samples}; expected a labels file for this split")
            if lf.n_classes and lf.n_classes != data.n_classes:
                raise InputError(f"{labels}: classes: {lf.n_classes} classes but {data.name} has {data.n_classes}")
            labels_train = lf.read_labels("labels")
            labels_source = f"labels file {labels} ({lf.uuid})"
            parents.append(lf.uuid)
    elif ckpt and "train_labels" in ckpt and data.split == "train" and data.name == ckpt_prov.get("dataset"):
        tl = ckpt["train_labels"].numpy().astype(np.int64)
        if len(tl) == data.n_samples:
            labels_train = tl
            labels_source = f"checkpoint train_labels (labels file uuid {ckpt_prov.get('labels_uuid')})"
            if ckpt_prov.get("labels_uuid"):
                parents.append(str(ckpt_prov["labels_uuid"]))

    # ---- which rows ----------------------------------------------------------------------------
    n_total = data.n_samples
    row_start, row_stop = 0, n_total
    shard_attrs: dict = {}
    if shard_spec is not None:
        from knntools.io.shards import ShardInfo, shard_rows

        row_start, row_stop = shard_rows(n_total, *shard_spec)
        shard_attrs = ShardInfo(path=Path(output), shard_index=shard_spec[0], shard_count=shard_spec[1], row_start=row_start,
                                row_stop=row_stop, total_rows=n_total).as_attrs()
    labels_clean_all = np.asarray(labels_clean)  # the attack's targets, indexed by absolute row
    labels_clean = labels_clean_all[row_start:row_stop]
    labels_train = np.asarray(labels_train)[row_start:row_stop]
    ids_rows = np.asarray(data.ids)[row_start:row_stop]

    # ---- stream --------------------------------------------------------------------------------
    np_dtype = np.float32 if dtype == "float32" else np.float16
    attack_params = {}
    if attack != "none":
        attack_params = {"eps": float(eps), "norm": "linf", "targeted": False, "labels": "labels_clean",
                         "input_range": "[0, 1] pixels before normalisation", "clip": [0.0, 1.0]}
        if attack == "pgd":
            attack_params.update({"steps": int(pgd_steps), "step_size": float(pgd_step_size if pgd_step_size is not None else 2.5 * float(eps) / pgd_steps),
                                  "random_start": bool(pgd_random_start)})
    store_logits = n_logits == data.n_classes
    root = {
        "classes": classes, "layer_order": names, "penultimate": net.penultimate if net.penultimate in names else (names[-1] if names else None),
        "dataset": data.name, "split": data.split, "model_uuid": net.model_uuid, "model_arch": net.arch, "model_kind": net.kind,
        "model_path": str(Path(net.path).resolve()) if net.path and not net.weights else (net.weights or None), "attack": attack, "attack_params": attack_params,
        "pooling": pool, "layer_dtype": dtype, "labels_source": labels_source,
        "normalization": net.normalization, "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
    }
    n = row_stop - row_start
    counts = {"clean": 0, "train": 0}
    t0 = time.perf_counter()
    where = f" rows [{row_start}, {row_stop}) of {n_total} (shard {shard_spec[0]}/{shard_spec[1]})" if shard_spec is not None else f" {n} rows"
    if dinfo.distributed:
        where = f" {n_total} rows on {dinfo.world_size} ranks, {n} per part (rank 0: rows [{row_start}, {row_stop}))"
    out.info(f"[bold]embed[/bold] {net.arch} on {data.name}/{data.split}:{where}, layers {', '.join(names) or '(none)'} + logits"
             f"{f', attack {attack} eps={eps:g}' if attack != 'none' else ''}, device {dev}")

    def write(dest: Path, extra: dict) -> str:
        """Embed the rows [row_start, row_stop) into the activations file ``dest``; returns its uuid."""
        with create(dest, "activations", parents=parents, seed=seed, attrs={**root, **extra}, force=force) as f:
            streams = {}
            for row in shapes[:-1]:
                streams[row["name"]] = create_stream(f, f"layers/{row['name']}", (n, row["dim"]), np_dtype,
                                                     attrs={"shape": row["shape"] if pool == "none" else [row["dim"]], "module": row["module"],
                                                            "pooling": pool, "shape_unpooled": row["shape"]})
            logits_ds = create_stream(f, "logits", (n, n_logits), np.float32) if store_logits else None
            with out.progress("embedding", total=n) as advance:
                for abs_start, feats, logits in iter_activations(
                    net, data.X, names, batch_size=batch_size, device=dev, pool=pool, dtype=np_dtype, attack=attack,
                    y_attack=labels_clean_all, eps=float(eps or 0.0), pgd_steps=pgd_steps, pgd_step_size=pgd_step_size, seed=seed,
                    pgd_random_start=pgd_random_start, workers=workers, rows=(row_start, row_stop),
                ):
                    start = abs_start - row_start  # iter_activations yields rows of the whole split
                    stop = start + len(logits)
                    for name, block in feats.items():
                        if not np.isfinite(block).all():
                            from knntools.errors import KnnToolsError

                            raise KnnToolsError(f"layer '{name}': non-finite activations in rows {start}..{stop - 1} (float16 overflow? try --dtype float32)")
                        streams[name][start:stop] = block
                    if logits_ds is not None:
                        logits_ds[start:stop] = logits
                        pred = logits.argmax(1)
                        counts["clean"] += int((pred == labels_clean[start:stop]).sum())
                        counts["train"] += int((pred == labels_train[start:stop]).sum())
                    advance(len(logits))
            write_array(f, "labels", np.asarray(labels_train, dtype=np.int64))
            write_array(f, "labels_clean", np.asarray(labels_clean, dtype=np.int64))
            write_array(f, "ids", np.asarray(ids_rows, dtype=np.int64))
            if store_logits and n:
                f.attrs["accuracy"] = float(counts["clean"] / n)
            return str(f.attrs["uuid"])

    if dinfo.distributed:
        from knntools.cli._embed_dist import embed_distributed

        file_uuid = embed_distributed(write, Path(output), shard_attrs, counts, device=dev, force=force)
        n = n_total  # the summary describes the whole set (counts are summed over the ranks)
    else:
        file_uuid = write(Path(output), shard_attrs)
    acc = counts["clean"] / n if (store_logits and n) else None
    correct_train = counts["train"]
    elapsed = time.perf_counter() - t0
    if not dinfo.is_main:  # rank 0 alone reports
        return
    size = sum(p.stat().st_size for p in [Path(output)] + ([part_path(output, i, dinfo.world_size) for i in range(dinfo.world_size)] if dinfo.distributed else []))
    if acc is not None:
        out.info(f"accuracy of the stored logits: {acc:.4f} (true labels), {correct_train / n:.4f} (labels as trained on) — {n / elapsed:.0f} images/s, {size / 2**20:.1f} MiB")
    out.result({
        "command": "embed", "output": str(output), "uuid": file_uuid, "model": net.path, "model_uuid": net.model_uuid, "arch": net.arch,
        "dataset": data.name, "split": data.split, "n_samples": n, "shard": (None if not shard_attrs else {"world_size": dinfo.world_size, "parts": [str(part_path(output, i, dinfo.world_size)) for i in range(dinfo.world_size)]} if dinfo.distributed else shard_attrs), "layers": [{"name": r["name"], "dim": r["dim"], "shape": r["shape"]} for r in shapes[:-1]],
        "logits": store_logits, "pool": pool, "dtype": dtype, "attack": attack, "attack_params": attack_params,
        "accuracy": acc, "accuracy_vs_labels": (correct_train / n if acc is not None else None), "labels_source": labels_source,
        "time_s": elapsed, "images_per_s": n / elapsed if elapsed > 0 else None, "bytes": size, "device": str(dev), "seed": seed,
    }, output)
