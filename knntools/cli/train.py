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
    from knntools.distributed import env_info
    from knntools.errors import InputError
    from knntools.io.h5 import check_output_path
    from knntools.utils import parse_int_list

    dinfo = env_info()  # torchrun's RANK/WORLD_SIZE (rank 0 of 1 without torchrun)
    out = Output("train", json_mode=json_ and dinfo.is_main, quiet=quiet or not dinfo.is_main, verbose=verbose)
    # ---- cheap validation first -----------------------------------------------------------
    if optimizer not in ("adam", "sgd"):
        raise InputError(f"--optimizer {optimizer!r}: expected adam or sgd")
    if lr_schedule not in ("none", "cosine", "step"):
        raise InputError(f"--lr-schedule {lr_schedule!r}: expected none, cosine or step")
    milestones = parse_int_list(lr_milestones, "--lr-milestones") if lr_milestones else []
    if lr_schedule == "step" and not milestones:
        raise InputError("--lr-schedule step: expected --lr-milestones EPOCHS, e.g. 40,60")
    kwargs = parse_arch_kwargs(arch_kwargs)
    check_output_path(output, force)
    mpath = metrics_path(output)
    check_output_path(mpath, force)
    if checkpoint_every and checkpoint_dir is None:
        raise InputError("--checkpoint-every: expected --checkpoint-dir DIR for the step checkpoints")
    if checkpoint_dir is not None and not checkpoint_every:
        raise InputError("--checkpoint-dir: expected --checkpoint-every N (steps between checkpoints)")
    if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise InputError(f"--checkpoint-dir {checkpoint_dir}: exists and is not a folder")

    import torch

    from knntools.distributed import process_group
    from knntools.utils import resolve_device

    dev = resolve_device(device)
    if dinfo.distributed and dev.type == "cuda":
        if dev.index is not None and device not in ("auto", "cuda"):
            raise InputError(f"--device {device}: under torchrun every rank uses cuda:LOCAL_RANK; expected --device cuda or auto")
        dev = torch.device("cuda", dinfo.local_rank)
    if num_threads:
        torch.set_num_threads(num_threads)
    with process_group(dev):
        _train(**{k: v for k, v in locals().items() if k in _TRAIN_ARGS})


_TRAIN_ARGS = ("output", "dataset", "data_dir", "download", "label_column", "workers", "image_size", "test_dataset", "arch", "epochs",
               "batch_size", "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "lr_gamma", "augment", "normalize", "labels",
               "subset", "checkpoint_every", "checkpoint_dir", "resume", "amp", "num_threads", "seed", "force", "out", "dinfo", "dev",
               "milestones", "kwargs", "mpath")


def _train(*, output, dataset, data_dir, download, label_column, workers, image_size, test_dataset, arch, epochs, batch_size, optimizer,
           lr, momentum, weight_decay, lr_schedule, lr_gamma, augment, normalize, labels, subset, checkpoint_every, checkpoint_dir,
           resume, amp, num_threads, seed, force, out, dinfo, dev, milestones, kwargs, mpath) -> None:
    """The body of ``train`` inside torchrun's process group (a plain call for one process)."""
    import numpy as np
    import torch

    from knntools import __version__
    from knntools.distributed import backend_for
    from knntools.errors import InputError
    from knntools.io import datasets as dsets
    from knntools.io.h5 import KFile, command_line, new_uuid, utc_now
    from knntools.models import registry
    from knntools.models.checkpoint import make_checkpoint, model_from_checkpoint, read_checkpoint, write_checkpoint
    from knntools.models.training import NO_FLIP_DATASETS, TrainConfig, normalization_stats, normalization_stats_stream, train_model
    from knntools.utils import seed_everything

    resumed = read_checkpoint(resume, kind="model") if resume is not None else None
    if resumed is not None:
        if "training_state" not in resumed:
            raise InputError(f"{resume}: checkpoint has no training_state; expected a checkpoint written by `knntools train` (step or final)")
        arch = resumed["arch"]
        kwargs = dict(resumed["arch_kwargs"])
        prov = resumed["provenance"]
        if dataset != prov.get("dataset") and Path(dataset).stem != prov.get("dataset"):
            raise InputError(f"{resume}: trained on dataset '{prov.get('dataset')}' but --dataset is '{dataset}'; expected the same dataset")
    else:
        registry.check_arch(arch)

    # ---- data ---------------------------------------------------------------------------------
    is_table = Path(dataset).suffix.lower() in (".csv", ".npz", ".h5", ".hdf5")
    if is_table:
        train_ds = dsets.load_table(dataset, label_column=label_column)
        test_ds = dsets.load_table(test_dataset, label_column=label_column) if test_dataset else None
        if test_ds is not None and test_ds.X.shape[1:] != train_ds.X.shape[1:]:
            raise InputError(f"--test-dataset {test_dataset}: {test_ds.X.shape[1]} features but {dataset} has {train_ds.X.shape[1]}; expected the same columns")
    else:
        if test_dataset:
            raise InputError("--test-dataset: only for tabular --dataset files; image sets are evaluated on their test split")
        if resumed is not None and dataset in dsets.FOLDER_SETS:
            image_size = int(resumed["input_shape"][-1])
        train_ds = dsets.load_dataset(dataset, split="train", data_dir=data_dir, download=download, image_size=image_size)
        test_ds = dsets.load_dataset(dataset, split="test", data_dir=data_dir, download=download, image_size=image_size)
    y_train = train_ds.y
    labels_uuid, labels_file = None, None
    if labels is not None:
        with KFile(labels, "labels") as lf:
            if lf.n_samples != train_ds.n_samples:
                raise InputError(f"{labels}: labels: {lf.n_samples} rows but {train_ds.name}/train has {train_ds.n_samples}; expected a labels file made for this training split")
            if lf.n_classes and lf.n_classes != train_ds.n_classes:
                raise InputError(f"{labels}: classes: {lf.n_classes} classes but {train_ds.name} has {train_ds.n_classes}; expected the same classes")
            if lf.attrs.get("split") not in (None, "train") and not is_table:
                raise InputError(f"{labels}: split is '{lf.attrs.get('split')}'; expected labels for the train split")
            if lf.attrs.get("dataset") not in (None, train_ds.name):
                raise InputError(f"{labels}: made for dataset '{lf.attrs.get('dataset')}'; expected '{train_ds.name}'")
            y_noisy = lf.read_labels("labels")
            if lf.has("ids"):
                ids = lf.read("ids").astype(np.int64)
                if not np.array_equal(ids, train_ds.ids):
                    raise InputError(f"{labels}: ids differ from the rows of {train_ds.name}/train; expected a labels file made for this split")
            labels_uuid, labels_file = lf.uuid, str(Path(labels).resolve())
        y_train = y_noisy
    if resumed is not None and "train_labels" in resumed and labels is None:
        y_train = resumed["train_labels"].numpy().astype(np.int64)
        labels_uuid, labels_file = resumed["provenance"].get("labels_uuid"), resumed["provenance"].get("labels_file")
        if len(y_train) != train_ds.n_samples:
            raise InputError(f"{resume}: train_labels has {len(y_train)} rows but {train_ds.name}/train has {train_ds.n_samples}")
    if subset is not None and subset > train_ds.n_samples:
        raise InputError(f"--subset {subset}: the training split has only {train_ds.n_samples} rows")

    seed_everything(seed)
    rows = np.arange(train_ds.n_samples)
    if resumed is not None and "subset_ids" in resumed:
        rows = resumed["subset_ids"].numpy().astype(np.int64)
    elif subset is not None:
        rows = np.sort(np.random.default_rng(seed).choice(train_ds.n_samples, size=subset, replace=False))
    streaming = train_ds.streaming
    if streaming:  # folder sets: a view of the torch Dataset, images decoded by the DataLoader
        X_fit = train_ds.X if len(rows) == train_ds.n_samples else torch.utils.data.Subset(train_ds.X, rows.tolist())
        y_fit = y_train[rows]
    else:
        X_fit, y_fit = train_ds.X[rows], y_train[rows]
    if resumed is not None:
        normalization = dict(resumed["normalization"])
    elif not normalize:
        normalization = {"mean": [], "std": []}
    elif streaming:
        normalization = normalization_stats_stream(train_ds.X, rows, seed=seed, workers=workers)
    else:
        normalization = normalization_stats(X_fit)

    # ---- model --------------------------------------------------------------------------------
    torch.manual_seed(seed)
    if resumed is not None:
        model = model_from_checkpoint(resumed)
    else:
        model = registry.build_model(arch, train_ds.input_shape, train_ds.n_classes, **kwargs)
        try:
            with torch.no_grad():
                model.eval()
                model(torch.zeros((2, *train_ds.input_shape)))
        except RuntimeError as exc:
            raise InputError(f"--arch {arch}: cannot run on {train_ds.name}'s input shape {train_ds.input_shape} ({str(exc).splitlines()[0][:140]})") from None
    n_params = int(sum(p.numel() for p in model.parameters()))
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, optimizer=optimizer,
        lr=float(lr if lr is not None else (1e-3 if optimizer == "adam" else 0.1)), momentum=momentum,
        weight_decay=weight_decay, lr_schedule=lr_schedule, milestones=milestones, gamma=lr_gamma,
        augment=augment, flip=train_ds.name not in NO_FLIP_DATASETS, amp=amp, seed=seed, checkpoint_every=checkpoint_every,
    )
    if resumed is not None:
        done = int(resumed["training_state"]["epoch"])
        if done >= epochs and int(resumed["training_state"].get("epoch_step", 0)) == 0:
            raise InputError(f"--resume {resume}: already trained {done} epochs; expected --epochs > {done}")
    model_uuid = new_uuid()
    provenance = {
        "model_uuid": model_uuid, "created": utc_now(), "knntools_version": __version__,
        "command": command_line(), "dataset": train_ds.name,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "dataset_path": str(Path(dataset).resolve()) if is_table else None,
        "split": "train", "n_train": int(len(rows)), "labels_file": labels_file, "labels_uuid": labels_uuid,
        "subset": int(subset) if subset is not None else (int(len(rows)) if resumed is not None and "subset_ids" in resumed else None),
        "seed": int(seed), "hyperparameters": cfg.as_dict(), "device": str(dev), "n_parameters": n_params,
        # a seed reproduces a network only with the same torch build and CPU thread count:
        # the thread count changes the order of floating-point sums in convolutions
        "torch_version": str(torch.__version__), "num_threads": int(torch.get_num_threads()),
        "resumed_from": str(resume) if resume is not None else None,
        "resumed_model_uuid": resumed["provenance"].get("model_uuid") if resumed is not None else None,
        # data-parallel runs (torchrun): number of processes and their torch.distributed backend
        "world_size": int(dinfo.world_size), "backend": backend_for(dev) if dinfo.distributed else None,
    }

    def make_ckpt(training_state: dict[str, Any] | None, history: list[dict[str, Any]]) -> dict[str, Any]:
        ckpt: dict[str, Any] = {
            "arch": arch, "arch_kwargs": kwargs,
            "input_shape": list(train_ds.input_shape), "classes": list(train_ds.classes),
            "normalization": {"mean": list(normalization["mean"]), "std": list(normalization["std"])},
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "provenance": dict(provenance), "history": list(history),
        }
        if labels_file is not None or not np.array_equal(y_train, train_ds.y):
            ckpt["train_labels"] = torch.as_tensor(np.asarray(y_train, dtype=np.int64))
        if len(rows) != train_ds.n_samples:
            ckpt["subset_ids"] = torch.as_tensor(rows.astype(np.int64))
        if training_state is not None:
            ckpt["training_state"] = training_state
        return make_checkpoint(ckpt, kind="model")

    ck_paths: list[str] = []

    def on_checkpoint(state: dict[str, Any]) -> None:
        if not dinfo.is_main:  # every rank reaches a checkpoint (its RNG is gathered); rank 0 writes
            return
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        p = checkpoint_dir / f"step-{state['step']:07d}.pt"
        ck = make_ckpt(state, state["history"])
        ck["provenance"]["step"], ck["provenance"]["epoch_float"] = state["step"], state["epoch"] + state["epoch_step"] / max(1, -(-len(rows) // batch_size))
        write_checkpoint(ck, p, kind="model", force=True)
        ck_paths.append(str(p))

    out.info(f"[bold]train[/bold] {arch} ({n_params:,} parameters) on {train_ds.name}/train: {len(rows)} rows"
             f"{' (noisy labels from ' + str(labels) + ')' if labels else ''}, {cfg.epochs} epochs, {optimizer} lr={cfg.lr:g}, "
             f"batch {batch_size}, device {dev}"
             + (f", {dinfo.world_size} processes ({backend_for(dev)})" if dinfo.distributed else ""))

    steps_per_epoch = -(-len(rows) // batch_size)
    start_epoch = int(resumed["training_state"]["epoch"]) if resumed is not None else 0
    bar_total = (epochs - start_epoch) * len(rows)

    def on_epoch(rec: dict[str, Any]) -> None:
        test = f", test loss {rec['test_loss']:.4f} acc {rec['test_acc']:.4f}" if rec["test_acc"] is not None else ""
        out.info(f"epoch {rec['epoch']}/{epochs}: train loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f}{test} ({rec['time_s']:.1f} s)")

    with out.progress("training", total=bar_total) as advance:
        history, final_state = train_model(
            model, X_fit, y_fit, cfg, normalization=normalization,
            X_test=None if test_ds is None else test_ds.X, y_test=None if test_ds is None else test_ds.y,
            device=dev, state=resumed["training_state"] if resumed is not None else None,
            on_batch=advance if not dinfo.distributed else (lambda k, **kw: advance(k * dinfo.world_size, **kw)),  # rank 0 sees 1/W of the rows
            on_epoch=on_epoch, on_checkpoint=on_checkpoint if checkpoint_every else None, workers=workers,
        )
    if not dinfo.is_main:  # rank 0 alone writes files and reports
        return
    ckpt = make_ckpt(final_state, history)
    last = history[-1] if history else {}
    ckpt["metrics"] = {k: last.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
    # the checkpoint goes to its temporary file first; the metrics CSV is written and renamed, then
    # the checkpoint is renamed: an interrupted run leaves neither (docs/reliability.md)
    from knntools.io.h5 import atomic_path

    with atomic_path(output, force=force) as tmp_ckpt:
        write_checkpoint(ckpt, tmp_ckpt, kind="model", force=True)
        write_metrics_csv(mpath, history, force=force)
    total_time = float(sum(r.get("time_s", 0.0) for r in history[start_epoch:]))
    train_time = float(sum(r.get("train_time_s", 0.0) for r in history[start_epoch:]))
    out.result({
        "command": "train", "output": str(output), "metrics_file": str(mpath), "model_uuid": model_uuid, "arch": arch,
        "arch_kwargs": kwargs, "dataset": train_ds.name, "n_train": int(len(rows)), "n_test": None if test_ds is None else test_ds.n_samples,
        "classes": train_ds.classes, "n_parameters": n_params, "epochs": epochs, "steps": int(final_state["step"]),
        "steps_per_epoch": steps_per_epoch, "labels_file": labels_file, "labels_uuid": labels_uuid, "seed": seed,
        "device": str(dev), "world_size": int(dinfo.world_size), "backend": provenance["backend"], "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "test_loss": last.get("test_loss"), "test_acc": last.get("test_acc"), "time_s": total_time,
        "train_images_per_s": (len(rows) * (epochs - start_epoch) / train_time) if train_time > 0 else None,
        "checkpoints": ck_paths, "history": history,
    }, output)
