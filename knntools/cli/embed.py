"""``knntools embed``: run a model over a dataset split and stream its activations to an HDF5 file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import BatchSize, DataDir, Device, Download, Force, Json, LabelColumn, Layers, NumThreads, OptOutputPath, Quiet, Seed, Split, Verbose, Workers
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
--list-layers); the logits are always stored (--layers logits, or none, stores them alone); conv
maps are stored flat or pooled (--pool avg|max). Batches are streamed to disk,
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
    layers: Layers = "all",
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

    from knntools.distributed import env_info

    dinfo = env_info()
    out = Output("embed", json_mode=json_ and dinfo.is_main, quiet=quiet or not dinfo.is_main, verbose=verbose)  # rank 0 alone reports
    norm_override = _check_options(pool=pool, dtype=dtype, attack=attack, eps=eps, model=model, arch=arch, weights=weights, mean=mean, std=std)
    shard_spec = _shard_spec(shard, dinfo)
    if not list_layers:
        _check_outputs(output, force, dinfo)

    import torch

    from knntools.models.features import plan_embedding, write_activations
    from knntools.utils import resolve_device

    dev = resolve_device(device)
    if num_threads:
        torch.set_num_threads(num_threads)
    plan = plan_embedding(model, arch=arch, weights=weights, normalization=norm_override, dataset=dataset, data_dir=data_dir, split=split,
                          download=download, label_column=label_column, layers=layers, pool=pool, dtype=dtype, labels=labels, attack=attack,
                          eps=eps, pgd_steps=pgd_steps, pgd_step_size=pgd_step_size, pgd_random_start=pgd_random_start, list_only=list_layers)
    if list_layers:
        return _report_layers(out, plan.net, pool)
    for line in plan.warnings:
        out.warn(line)
    n_total = plan.data.n_samples
    rows, shard_attrs = _shard_rows(shard_spec, n_total, output)
    _announce(out, plan, rows, n_total, shard_spec, dinfo, dev)
    t0 = time.perf_counter()
    with out.progress("embedding", total=rows[1] - rows[0]) as advance:
        def write(dest: Path, extra: dict) -> dict:
            return write_activations(plan, dest, rows=rows, attrs=extra, batch_size=batch_size, device=dev, seed=seed, workers=workers,
                                     force=force, on_batch=advance)

        if dinfo.distributed:
            from knntools.cli._embed_dist import embed_distributed

            file_uuid, counts = embed_distributed(write, Path(output), shard_attrs, device=dev, force=force)
            n = n_total  # the summary describes the whole set (counts are summed over the ranks)
        else:
            res = write(Path(output), shard_attrs)
            file_uuid, counts, n = res["uuid"], res, res["n_samples"]
    if dinfo.is_main:  # rank 0 alone reports
        _report(out, plan, output, file_uuid, n, counts, time.perf_counter() - t0, shard_attrs, dinfo, dev, seed)


def _check_options(*, pool: str, dtype: str, attack: str, eps: Optional[float], model: Optional[Path], arch: Optional[str], weights: Optional[str],
                   mean: Optional[str], std: Optional[str]) -> Optional[dict]:
    """Cheap checks of the option values and combinations; returns the --mean/--std override (or None)."""
    from knntools.errors import InputError
    from knntools.models.attacks import ATTACKS
    from knntools.models.features import POOLS

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
    if mean is None:
        return None
    m, s = _parse_floats(mean, "--mean"), _parse_floats(std, "--std")
    if len(m) != len(s) or any(v <= 0 for v in s):
        raise InputError(f"--mean/--std: {len(m)} means and {len(s)} stds; expected equally many, stds > 0")
    return {"mean": m, "std": s}


def _shard_spec(shard: Optional[str], dinfo: Any) -> Optional[tuple[int, int]]:
    """``(index, count)`` from --shard I/N, or from torchrun's rank and world size."""
    from knntools.errors import InputError
    from knntools.io.shards import parse_shard_spec

    spec = parse_shard_spec(shard) if shard is not None else None
    if spec is not None and dinfo.distributed:
        raise InputError(f"--shard {shard}: not allowed under torchrun (WORLD_SIZE={dinfo.world_size}), where the rank and world size choose the shard; expected one or the other")
    return (dinfo.rank, dinfo.world_size) if dinfo.distributed else spec


def _check_outputs(output: Optional[Path], force: bool, dinfo: Any) -> None:
    """-o is required; existing files (the set and, under torchrun, every part) need --force."""
    from knntools.errors import InputError
    from knntools.io.h5 import check_output_path
    from knntools.io.shards import part_path

    if output is None:
        raise InputError("-o/--output: expected an output .h5 path (or --list-layers)")
    if dinfo.is_main:  # under torchrun rank 0 checks the set and every part (one error line, not one per rank)
        check_output_path(output, force)
        for i in range(dinfo.world_size if dinfo.distributed else 0):
            check_output_path(part_path(output, i, dinfo.world_size), force)


def _shard_rows(shard_spec: Optional[tuple[int, int]], n_total: int, output: Path) -> tuple[tuple[int, int], dict]:
    """Rows ``(start, stop)`` of this shard (all rows without one) and its shard attributes."""
    if shard_spec is None:
        return (0, n_total), {}
    from knntools.io.shards import ShardInfo, shard_rows

    start, stop = shard_rows(n_total, *shard_spec)
    attrs = ShardInfo(path=Path(output), shard_index=shard_spec[0], shard_count=shard_spec[1], row_start=start, row_stop=stop, total_rows=n_total).as_attrs()
    return (start, stop), attrs


def _report_layers(out: Output, net: Any, pool: str) -> None:
    """--list-layers: the network's default layers as a table (stderr) and JSON."""
    from knntools.models.features import describe_layers

    rows = describe_layers(net, pool=pool)
    out.info(f"[bold]{net.path}[/bold]: {net.arch} ({net.kind}), input {tuple(net.input_shape)}; layers in network order"
             + (f", penultimate = {net.penultimate}" if net.penultimate else ""))
    out.table(None, ["name", "shape", "dim", "penultimate"], [(r["name"], "×".join(map(str, r["shape"])), r["dim"], "yes" if r["penultimate"] else "") for r in rows])
    if net.kind != "torchscript":
        out.info("Any module path of the network can be named too (e.g. a block inside a stage); --layers all takes the rows above.")
    out.result({"command": "embed", "model": net.path, "arch": net.arch, "kind": net.kind, "input_shape": list(net.input_shape),
                "penultimate": net.penultimate, "pool": pool, "layers": rows})


def _announce(out: Output, plan: Any, rows: tuple[int, int], n_total: int, shard_spec: Any, dinfo: Any, dev: Any) -> None:
    data, (start, stop) = plan.data, rows
    where = f" rows [{start}, {stop}) of {n_total} (shard {shard_spec[0]}/{shard_spec[1]})" if shard_spec is not None else f" {stop - start} rows"
    if dinfo.distributed:
        where = f" {n_total} rows on {dinfo.world_size} ranks, {stop - start} per part (rank 0: rows [{start}, {stop}))"
    out.info(f"[bold]embed[/bold] {plan.net.arch} on {data.name}/{data.split}:{where}, layers {', '.join(plan.names) or '(none)'} + logits"
             f"{f', attack {plan.attack} eps={plan.eps:g}' if plan.attack != 'none' else ''}, device {dev}")


def _report(out: Output, plan: Any, output: Path, file_uuid: str, n: int, counts: dict, elapsed: float, shard_attrs: dict, dinfo: Any,
            dev: Any, seed: int) -> None:
    """The accuracy line and the --json summary."""
    from knntools.io.shards import part_path

    parts = [part_path(output, i, dinfo.world_size) for i in range(dinfo.world_size)] if dinfo.distributed else []
    size = sum(p.stat().st_size for p in [Path(output), *parts])
    acc = counts["correct"] / n if (plan.store_logits and n) else None
    correct_train = counts["correct_vs_labels"]
    if acc is not None:
        out.info(f"accuracy of the stored logits: {acc:.4f} (true labels), {correct_train / n:.4f} (labels as trained on) — {n / elapsed:.0f} images/s, {size / 2**20:.1f} MiB")
    net, data = plan.net, plan.data
    out.result({
        "command": "embed", "output": str(output), "uuid": file_uuid, "model": net.path, "model_uuid": net.model_uuid, "arch": net.arch,
        "dataset": data.name, "split": data.split, "n_samples": n,
        "shard": ({"world_size": dinfo.world_size, "parts": [str(p) for p in parts]} if dinfo.distributed else shard_attrs) or None,
        "layers": [{"name": r["name"], "dim": r["dim"], "shape": r["shape"]} for r in plan.shapes[:-1]],
        "logits": plan.store_logits, "pool": plan.pool, "dtype": plan.dtype, "attack": plan.attack, "attack_params": plan.attack_params,
        "accuracy": acc, "accuracy_vs_labels": (correct_train / n if acc is not None else None), "labels_source": plan.labels_source,
        "time_s": elapsed, "images_per_s": n / elapsed if elapsed > 0 else None, "bytes": size, "device": str(dev), "seed": seed,
    }, output)
