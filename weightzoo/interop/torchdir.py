"""Import folders of plain PyTorch snapshot files, as many training scripts leave them.

One network per folder (SOURCE is that folder, or a folder of such folders)::

    <network>/metadata.json          (or metadata.yaml) — see below
    <network>/epoch_0.pt, epoch_5.pt, ...   state dicts or {"state_dict": ...}; any name
                                     whose last number is the epoch; .pt, .pth or .ckpt

metadata.json::

    {"hyperparameters": {"lr": 0.01, "optimizer": "sgd", ...},   # table columns
     "config": {"architecture": "mlp", "dataset": "digits", ...}, # optional: a weightzoo config
     "metrics": {"5": {"train_acc": 0.9, "test_acc": 0.8, "train_loss": 0.3,
                       "test_loss": 0.4, "step": 120}, ...},       # optional, by epoch
     "split": "train"}                                             # optional: train, val or test

Snapshot k is the k-th file by epoch. When ``config`` builds a weightzoo model with the
files' tensor shapes, ``load_model`` rebuilds it; otherwise the layout is named after the
state dict's keys and ``load_model`` fails. Files are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from weightzoo.interop.common import (ContentDigest, ImportedNetwork, SourceError, layout_from_tensors, load_state,
                                      network_folders,
                                      matching_layout, read_json, snapshot_row, stack_states, unmapped_config)

KIND = "torch"
SUFFIXES = (".pt", ".pth", ".ckpt")
METADATA = ("metadata.json", "metadata.yaml", "metadata.yml")
METRIC_NAMES = ("train_loss", "train_acc", "test_loss", "test_acc", "gap")


def list_networks(source: Path) -> list[str]:
    """``"."`` for a single network folder, else its sub-folders holding metadata or snapshots."""
    return network_folders(source, _is_network)


def _is_network(folder: Path) -> bool:
    return folder.is_dir() and any(p.name in METADATA or p.suffix in SUFFIXES for p in folder.iterdir())


def network_paths(source: Path, handle: str) -> list[Path]:
    """The folder a network is read from."""
    return [source / handle]


def read_network(source: Path, handle: str) -> ImportedNetwork:
    """Read one folder: its metadata file and every snapshot file."""
    folder = source / handle
    digest = ContentDigest()
    metadata = _metadata(folder, digest)
    files = _snapshot_files(folder)
    states = [(path, load_state(path, digest, path.name)) for _, path in files]
    weights = stack_states(states)
    hyperparameters = dict(metadata.get("hyperparameters") or {})
    tensors = states[0][1]
    layout = matching_layout(metadata.get("config"), tensors)
    config = metadata["config"] if layout is not None else unmapped_config(KIND)
    metrics = {str(key): value for key, value in (metadata.get("metrics") or {}).items()}
    snapshots = [snapshot_row(k, epoch=epoch, **_metrics(metrics.get(str(epoch)), folder))
                 for k, (epoch, _) in enumerate(files)]
    return ImportedNetwork(kind=KIND, name=handle, weights=weights, snapshots=snapshots,
                           hyperparameters=hyperparameters, config=config,
                           layout=layout or layout_from_tensors(tensors), digest=digest.hexdigest(),
                           mapped=layout is not None, split=metadata.get("split"))


def _metadata(folder: Path, digest: ContentDigest) -> dict:
    path = next((folder / name for name in METADATA if (folder / name).is_file()), folder / METADATA[0])
    if path.suffix == ".json":
        value = read_json(path, digest, path.name)
    else:
        try:
            value = yaml.safe_load(digest.read(path, path.name))
        except yaml.YAMLError as error:
            raise SourceError(path, f"bad YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise SourceError(path, "expected a mapping with 'hyperparameters' (and optional 'config', 'metrics')")
    for key, kind in (("hyperparameters", dict), ("config", dict), ("metrics", dict)):
        if value.get(key) is not None and not isinstance(value[key], kind):
            raise SourceError(path, f"{key!r} must be a mapping, got {type(value[key]).__name__}")
    if value.get("split") not in (None, "train", "val", "test"):
        raise SourceError(path, f"'split' must be train, val or test, got {value['split']!r}")
    return value


def _snapshot_files(folder: Path) -> list[tuple[int, Path]]:
    files = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES):
        numbers = re.findall(r"\d+", path.stem)
        if not numbers:
            raise SourceError(path, "no epoch number in the file name")
        files.append((int(numbers[-1]), path))
    if not files:
        raise SourceError(folder, f"no snapshot files ({', '.join(SUFFIXES)})")
    files.sort()
    epochs = [epoch for epoch, _ in files]
    if len(set(epochs)) != len(epochs):
        raise SourceError(folder, f"two snapshot files for one epoch: {[p.name for _, p in files]}")
    return files


def _metrics(values, folder: Path) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SourceError(folder / "metadata", f"metrics of an epoch must be a mapping, got {values!r}")
    result = {name: values.get(name) for name in METRIC_NAMES + ("step",)}
    bad = {name: value for name, value in result.items()
           if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))}
    if bad:
        raise SourceError(folder / "metadata", f"metrics must be numbers or null, got {bad}")
    return result
