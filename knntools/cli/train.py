"""``knntools train``: train a classifier on an image or tabular dataset and save a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import BatchSize, DataDir, DatasetName, Device, Download, Force, Json, LabelColumn, NumThreads, OutputPath, Quiet, Seed, Verbose, Workers
from knntools.cli._output import Output

HELP = """Train a classifier on an image set or a table and write a self-describing checkpoint.

Architectures: mlp (MLP-640), lenet, dknn-cnn, resnet20, wide-resnet, vgg13, resnet10, ffn (tables),
or any torchvision classification model by name (resnet18, mobilenet_v3_large, …).

Images of the built-in sets are kept in memory as tensors (no DataLoader); folder sets (imagefolder:
DIR/train and DIR/test|val, or DIR itself; imagenet) are streamed by a DataLoader with --workers
processes, resized and centre-cropped to --image-size. Augmentation (random crop + flip) runs on
tensors. Labels come from the dataset, or from a `noise` labels file (--labels). --subset N trains
on N random rows (Cohen et al.'s overfitting setting). Checkpoints every N steps go into
--checkpoint-dir (for analysis over training); --resume continues from one. A per-epoch metrics log
(<output>.metrics.csv) is written beside the model.

Reads: a dataset split (--dataset, --data-dir) or a features/.csv/.npz table; optional labels file
(labels, ids, classes).
Writes: a checkpoint loadable with torch.load(weights_only=True): arch, arch_kwargs, input_shape,
classes, normalization, state_dict, provenance (model_uuid, labels_uuid, world_size, backend …),
train_labels, history.

Data-parallel under torchrun: `torchrun --nproc-per-node N -m knntools train …` trains with
DistributedDataParallel (backend nccl on CUDA, gloo on CPU; each rank on cuda:LOCAL_RANK), every
rank drawing its share of each epoch with a DistributedSampler; --batch-size is the global batch
(ceil(B/N) rows per rank and step). Rank 0 alone writes the checkpoint, the metrics and messages.
"""

EPILOG = """Examples:

  knntools train --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist --arch dknn-cnn --epochs 3 --seed 0 -o model.pt

  knntools train --dataset fashion-mnist --labels labels.h5 --arch dknn-cnn --epochs 3 -o noisy.pt

  knntools train --dataset cifar10 --arch resnet20 --optimizer sgd --lr 0.1 --lr-schedule cosine --augment --epochs 100 -o r20.pt

  knntools train --dataset digits --arch mlp --epochs 20 -o digits.pt --json

  torchrun --standalone --nproc-per-node 2 -m knntools train --dataset digits --arch mlp --epochs 20 -o ddp.pt

  knntools train --dataset imagefolder --data-dir photos/ --arch resnet18 --image-size 128 --workers 4 --epochs 10 -o photos.pt
"""


def parse_arch_kwargs(text: Optional[str]) -> dict[str, Any]:
    """Parse ``--arch-kwargs``: a JSON object or ``key=value,key=value`` (values JSON-decoded when possible).

    Raises
    ------
    InputError
        Malformed text.
    """
    import json

    from knntools.errors import InputError

    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            val = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--arch-kwargs: invalid JSON ({exc.msg}); expected e.g. '{{\"depth\": 10}}' or depth=10,widen_factor=1") from None
        if not isinstance(val, dict):
            raise InputError("--arch-kwargs: expected a JSON object")
        return val
    out: dict[str, Any] = {}
    # split on commas that start a new key=value (values may be JSON lists containing commas)
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in parts:
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"--arch-kwargs {text!r}: '{part}' is not key=value; expected e.g. depth=10,widen_factor=1")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v.strip()
    return out


def metrics_path(output: Path) -> Path:
    """Where the per-epoch metrics CSV goes: ``<output without .pt>.metrics.csv``."""
    return output.with_name(output.stem + ".metrics.csv")


def write_metrics_csv(path: Path, history: list[dict[str, Any]], *, force: bool) -> None:
    """Write the per-epoch history as CSV atomically."""
    import csv

    from knntools.io.h5 import atomic_path

    cols = ["epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "train_time_s", "time_s"]
    with atomic_path(path, force=force) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for rec in history:
                w.writerow(["" if rec.get(c) is None else (f"{rec[c]:.6g}" if isinstance(rec.get(c), float) else rec.get(c)) for c in cols])


@handle_errors("train")
def train_cli(
    output: OutputPath,
    dataset: DatasetName = "digits",
    data_dir: DataDir = None,
    download: Download = False,
    label_column: LabelColumn = None,
    workers: Workers = 0,
    image_size: Annotated[int, typer.Option("--image-size", help="Folder sets (imagefolder, imagenet): images are resized (shorter side) and centre-cropped to S×S.", min=8)] = 224,
    test_dataset: Annotated[Optional[str], typer.Option("--test-dataset", help="Tables: a features .h5/.csv/.npz evaluated after every epoch (image sets use their test split).")] = None,
    arch: Annotated[str, typer.Option("--arch", help="mlp | lenet | dknn-cnn | resnet20 | wide-resnet | vgg13 | resnet10 | ffn | a torchvision model name.")] = "mlp",
    arch_kwargs: Annotated[Optional[str], typer.Option("--arch-kwargs", help="Architecture kwargs: key=value,… or JSON, e.g. depth=16,widen_factor=4.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Number of epochs (total, also when resuming).", min=1)] = 10,
    batch_size: BatchSize = 128,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam | sgd.")] = "adam",
    lr: Annotated[Optional[float], typer.Option("--lr", help="Initial learning rate (default 1e-3 for adam, 0.1 for sgd).", min=0.0)] = None,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.", min=0.0, max=1.0)] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="L2 weight decay.", min=0.0)] = 0.0,
    lr_schedule: Annotated[str, typer.Option("--lr-schedule", help="none | cosine (per step) | step (x gamma at --lr-milestones).")] = "none",
    lr_milestones: Annotated[Optional[str], typer.Option("--lr-milestones", help="step schedule: epochs at which the lr is multiplied by --lr-gamma, e.g. 40,60.")] = None,
    lr_gamma: Annotated[float, typer.Option("--lr-gamma", help="step schedule: decay factor.", min=0.0)] = 0.1,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random crop (pad H/8) + horizontal flip (no flip for mnist/kmnist/digits/svhn).")] = False,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Standardise inputs with the training set's per-channel (per-feature) mean and std.")] = True,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="A `noise` labels file for the training split (its labels are trained on).", dir_okay=False)] = None,
    subset: Annotated[Optional[int], typer.Option("--subset", help="Train on N random training rows (seeded).", min=1)] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Save a checkpoint every N optimizer steps into --checkpoint-dir (0: off).", min=0)] = 0,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Folder for step checkpoints (step-0000500.pt …); created if missing.", file_okay=False)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue training from a checkpoint (model, optimizer, step, RNG) up to --epochs.", dir_okay=False)] = None,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16, else fp16 + grad scaling).")] = True,
    device: Device = "auto",
    num_threads: NumThreads = 0,
    seed: Seed = 0,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    from knntools.distributed import env_info, process_group

    dinfo = env_info()  # torchrun's RANK/WORLD_SIZE (rank 0 of 1 without torchrun)
    out = Output("train", json_mode=json_ and dinfo.is_main, quiet=quiet or not dinfo.is_main, verbose=verbose)
    cfg = _train_config(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                        lr_schedule=lr_schedule, lr_milestones=lr_milestones, lr_gamma=lr_gamma, augment=augment, amp=amp, seed=seed,
                        checkpoint_every=checkpoint_every)
    kwargs = parse_arch_kwargs(arch_kwargs)
    mpath = _check_outputs(output, force, checkpoint_every, checkpoint_dir)
    dev = _train_device(device, dinfo, num_threads)
    from knntools.models.training import fit_classifier

    with process_group(dev):
        with _Report(out, dinfo, checkpoint_dir, labels) as report:
            res = fit_classifier(dataset, arch=arch, arch_kwargs=kwargs, config=cfg, data_dir=data_dir, download=download, label_column=label_column,
                                 test_dataset=test_dataset, image_size=image_size, labels=labels, subset=subset, normalize=normalize, resume=resume,
                                 device=dev, workers=workers, on_start=report.start, on_batch=report.batch, on_epoch=report.epoch,
                                 on_checkpoint=report.checkpoint)
        if dinfo.is_main:  # rank 0 alone writes files and reports
            _write_and_report(out, res, output, mpath, force, report.paths)


def _train_config(*, epochs: int, batch_size: int, optimizer: str, lr: Optional[float], momentum: float, weight_decay: float, lr_schedule: str,
                  lr_milestones: Optional[str], lr_gamma: float, augment: bool, amp: bool, seed: int, checkpoint_every: int) -> Any:
    """The options as a :class:`~knntools.models.training.TrainConfig` (lr default: 1e-3 for adam, 0.1 for sgd)."""
    from knntools.errors import InputError
    from knntools.models.training import TrainConfig
    from knntools.utils import parse_int_list

    if optimizer not in ("adam", "sgd"):
        raise InputError(f"--optimizer {optimizer!r}: expected adam or sgd")
    if lr_schedule not in ("none", "cosine", "step"):
        raise InputError(f"--lr-schedule {lr_schedule!r}: expected none, cosine or step")
    milestones = parse_int_list(lr_milestones, "--lr-milestones") if lr_milestones else []
    if lr_schedule == "step" and not milestones:
        raise InputError("--lr-schedule step: expected --lr-milestones EPOCHS, e.g. 40,60")
    return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=float(lr if lr is not None else (1e-3 if optimizer == "adam" else 0.1)),
                       momentum=momentum, weight_decay=weight_decay, lr_schedule=lr_schedule, milestones=milestones, gamma=lr_gamma,
                       augment=augment, amp=amp, seed=seed, checkpoint_every=checkpoint_every)


def _check_outputs(output: Path, force: bool, checkpoint_every: int, checkpoint_dir: Optional[Path]) -> Path:
    """Refuse existing outputs (without --force) and inconsistent step-checkpoint options; returns the metrics CSV path."""
    from knntools.errors import InputError
    from knntools.io.h5 import check_output_path

    check_output_path(output, force)
    mpath = metrics_path(output)
    check_output_path(mpath, force)
    if checkpoint_every and checkpoint_dir is None:
        raise InputError("--checkpoint-every: expected --checkpoint-dir DIR for the step checkpoints")
    if checkpoint_dir is not None and not checkpoint_every:
        raise InputError("--checkpoint-dir: expected --checkpoint-every N (steps between checkpoints)")
    if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise InputError(f"--checkpoint-dir {checkpoint_dir}: exists and is not a folder")
    return mpath


def _train_device(device: str, dinfo: Any, num_threads: int) -> Any:
    """``--device`` resolved (under torchrun every rank on cuda:LOCAL_RANK); sets torch's CPU threads."""
    import torch

    from knntools.errors import InputError
    from knntools.utils import resolve_device

    dev = resolve_device(device)
    if dinfo.distributed and dev.type == "cuda":
        if dev.index is not None and device not in ("auto", "cuda"):
            raise InputError(f"--device {device}: under torchrun every rank uses cuda:LOCAL_RANK; expected --device cuda or auto")
        dev = torch.device("cuda", dinfo.local_rank)
    if num_threads:
        torch.set_num_threads(num_threads)
    return dev


class _Report:
    """Messages, the progress bar and the step checkpoints of a training run (rank 0 writes)."""

    def __init__(self, out: Output, dinfo: Any, checkpoint_dir: Optional[Path], labels: Optional[Path]) -> None:
        import contextlib

        self.out, self.dinfo, self.checkpoint_dir, self.labels = out, dinfo, checkpoint_dir, labels
        self.stack = contextlib.ExitStack()
        self.advance: Any = lambda n=1, **kw: None
        self.paths: list[str] = []
        self.epochs = 0

    def __enter__(self) -> "_Report":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stack.close()

    def start(self, info: dict[str, Any]) -> None:
        from knntools.distributed import backend_for

        d = self.dinfo
        self.epochs = info["epochs"]
        self.out.info(f"[bold]train[/bold] {info['arch']} ({info['n_parameters']:,} parameters) on {info['dataset']}/train: {info['n_train']} rows"
                      f"{' (noisy labels from ' + str(self.labels) + ')' if self.labels else ''}, {info['epochs']} epochs, {info['optimizer']} lr={info['lr']:g}, "
                      f"batch {info['batch_size']}, device {info['device']}"
                      + (f", {d.world_size} processes ({backend_for(info['device'])})" if d.distributed else ""))
        self.advance = self.stack.enter_context(self.out.progress("training", total=info["bar_total"]))

    def batch(self, k: int, **kw: Any) -> None:
        self.advance(k * self.dinfo.world_size if self.dinfo.distributed else k, **kw)  # rank 0 sees 1/W of the rows

    def epoch(self, rec: dict[str, Any]) -> None:
        test = f", test loss {rec['test_loss']:.4f} acc {rec['test_acc']:.4f}" if rec["test_acc"] is not None else ""
        self.out.info(f"epoch {rec['epoch']}/{self.epochs}: train loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f}{test} ({rec['time_s']:.1f} s)")

    def checkpoint(self, ckpt: dict[str, Any]) -> None:
        from knntools.models.checkpoint import write_checkpoint

        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        p = self.checkpoint_dir / f"step-{ckpt['provenance']['step']:07d}.pt"
        write_checkpoint(ckpt, p, kind="model", force=True)
        self.paths.append(str(p))


def _write_and_report(out: Output, res: Any, output: Path, mpath: Path, force: bool, ck_paths: list[str]) -> None:
    """Write the checkpoint and its metrics CSV (both or neither) and print the summary."""
    from knntools.io.h5 import atomic_path
    from knntools.models.checkpoint import write_checkpoint

    # the checkpoint goes to its temporary file first; the metrics CSV is written and renamed, then
    # the checkpoint is renamed: an interrupted run leaves neither (docs/reliability.md)
    with atomic_path(output, force=force) as tmp_ckpt:
        write_checkpoint(res.checkpoint, tmp_ckpt, kind="model", force=True)
        write_metrics_csv(mpath, res.history, force=force)
    info, history = res.info, res.history
    start, epochs, n = info["start_epoch"], info["epochs"], info["n_train"]
    last = history[-1] if history else {}
    total_time = float(sum(r.get("time_s", 0.0) for r in history[start:]))
    train_time = float(sum(r.get("train_time_s", 0.0) for r in history[start:]))
    out.result({
        "command": "train", "output": str(output), "metrics_file": str(mpath), "model_uuid": info["model_uuid"], "arch": info["arch"],
        "arch_kwargs": info["arch_kwargs"], "dataset": info["dataset"], "n_train": n, "n_test": info["n_test"],
        "classes": info["classes"], "n_parameters": info["n_parameters"], "epochs": epochs, "steps": info["steps"],
        "steps_per_epoch": info["steps_per_epoch"], "labels_file": info["labels_file"], "labels_uuid": info["labels_uuid"], "seed": res.checkpoint["provenance"]["seed"],
        "device": info["device"], "world_size": info["world_size"], "backend": info["backend"], "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "test_loss": last.get("test_loss"), "test_acc": last.get("test_acc"), "time_s": total_time,
        "train_images_per_s": (n * (epochs - start) / train_time) if train_time > 0 else None,
        "checkpoints": ck_paths, "history": history,
    }, output)
