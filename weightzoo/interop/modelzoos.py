"""Import the Model Zoos layout of Schürholt et al. (github.com/ModelZoos/ModelZooDataset).

One folder per trained network (as Ray Tune leaves them)::

    <network>/params.json                    the config: "model::nlin", "optim::lr", ...
    <network>/result.json                    JSON lines, one per training_iteration (epoch),
                                             train_/test_ acc and loss, and Ray's "config"
    <network>/checkpoint_<epoch>/checkpoints a torch state dict (their CNN names tensors
                                             ``module_list.<index>.weight``)

SOURCE is the zoo folder (or one network folder). Snapshot k is the k-th checkpoint by
epoch; its metrics are the result line with that epoch (``epoch``, else
``training_iteration``); a network without result.json gets null metrics. Config keys
are renamed to weightzoo's vocabulary where one exists (``model::nlin`` → activation,
``model::init_type`` → init, ``optim::wd`` → weight_decay, ...), the others keep their name
with ``::`` → ``_``; their value names too (``leakyrelu`` → leaky_relu, ``rms_prop`` →
rmsprop). ``model::type`` "CNN" (their 2,464-parameter CNN, ``def_net.CNN``) maps onto
weightzoo's ``small-cnn`` when the tensor shapes agree, so ``load_model`` works: on
``model::channels_in`` × 28 × 28 inputs (their CIFAR-10 and STL-10 CNN-s zoos resize to 28
pixels, 3 channels) with ``model::o_dim`` outputs. A ``weightzoo::config`` key (written by
our exporter) is used as the config directly, and ``weightzoo::split`` is kept as the
network's split (their own zoos carry none: the split is drawn as for any network).
"""

from __future__ import annotations

import re
from pathlib import Path

from weightzoo.core.models import ACTIVATIONS, INITS
from weightzoo.interop.common import (ContentDigest, ImportedNetwork, SourceError, layout_from_tensors, load_state,
                                      network_folders,
                                      matching_layout, read_json, read_json_lines, snapshot_row, stack_states,
                                      unmapped_config)

KIND = "modelzoos"
CHECKPOINT = re.compile(r"^checkpoint_(\d+)$")
RENAMED = {"model::nlin": "activation", "model::init_type": "init", "model::dropout": "dropout",
           "optim::optimizer": "optimizer", "optim::lr": "lr", "optim::wd": "weight_decay",
           "training::batchsize": "batch_size", "training::epochs_train": "epochs",
           "weightzoo::model_id": "source_model_id"}
VALUES = {"activation": {"leakyrelu": "leaky_relu"}, "optimizer": {"rms_prop": "rmsprop"}}  # theirs → ours
CONFIG_KEY, SPLIT_KEY, LAYERS_KEY = "weightzoo::config", "weightzoo::split", "weightzoo::layer_lst"
NOT_HYPERPARAMETERS = (CONFIG_KEY, SPLIT_KEY, LAYERS_KEY)
INPUT_SIDE = 28  # def_net.CNN "ASSUMES 28x28 image size"; their 3-channel zoos resize to it


def list_networks(source: Path) -> list[str]:
    """Network folders (relative to ``source``): those holding params.json, result.json or checkpoints."""
    return network_folders(source, _is_network)


def _is_network(folder: Path) -> bool:
    return (folder / "params.json").exists() or (folder / "result.json").exists() or any(
        CHECKPOINT.match(p.name) for p in folder.iterdir() if p.is_dir())


def network_paths(source: Path, handle: str) -> list[Path]:
    """The folder a network is read from."""
    return [source / handle]


def read_network(source: Path, handle: str) -> ImportedNetwork:
    """Read one network folder: params, per-epoch results and checkpoints."""
    folder = source / handle
    digest = ContentDigest()
    params = read_json(folder / "params.json", digest, "params.json")
    if not isinstance(params, dict):
        raise SourceError(folder / "params.json", "expected a JSON object")
    checkpoints = _checkpoints(folder)
    states = [(path, load_state(path, digest, f"{path.parent.name}/checkpoints")) for _, path in checkpoints]
    weights = stack_states(states)
    results = read_json_lines(folder / "result.json", digest, "result.json") \
        if (folder / "result.json").exists() else []
    hyperparameters = _hyperparameters(params)
    candidate = params.get(CONFIG_KEY) or _small_cnn_config(params, hyperparameters)
    tensors = states[0][1]
    layout = matching_layout(candidate, tensors)
    config = candidate if layout is not None else unmapped_config(f"modelzoos-{params.get('model::type')}")
    try:
        snapshots = _snapshots([epoch for epoch, _ in checkpoints], results)
    except (TypeError, ValueError) as error:
        raise SourceError(folder / "result.json", f"a metric is not a number ({error})") from None
    split = params.get(SPLIT_KEY)
    if split not in (None, "train", "val", "test"):
        raise SourceError(folder / "params.json", f"{SPLIT_KEY} must be train, val or test, got {split!r}")
    return ImportedNetwork(kind=KIND, name=handle, weights=weights, snapshots=snapshots,
                           hyperparameters=hyperparameters, config=config,
                           layout=layout or layout_from_tensors(tensors), digest=digest.hexdigest(),
                           mapped=layout is not None, split=split)


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    found = sorted((int(m.group(1)), p / "checkpoints") for p in folder.iterdir()
                   if p.is_dir() and (m := CHECKPOINT.match(p.name)))
    if not found:
        raise SourceError(folder, "no checkpoint_<epoch> folders")
    epochs = [epoch for epoch, _ in found]
    if len(set(epochs)) != len(epochs):
        raise SourceError(folder, f"two checkpoint folders for one epoch: {epochs}")
    return found


def _hyperparameters(params: dict) -> dict:
    result = {}
    for key, value in params.items():
        if key in NOT_HYPERPARAMETERS:
            continue
        name = RENAMED.get(key, key.replace("::", "_"))
        result[name] = VALUES.get(name, {}).get(value, value) if isinstance(value, str) else value
    return result


def _small_cnn_config(params: dict, hyperparameters: dict) -> dict | None:
    """The weightzoo config of their CNN (checked against the tensor shapes afterwards):
    ``model::channels_in`` × 28 × 28 in, ``model::o_dim`` out (1-channel zoos keep the
    mnist-idx dataset they were imported with before; others name no dataset of ours)."""
    channels, outputs = params.get("model::channels_in", 1), params.get("model::o_dim", 10)
    init, activation = hyperparameters.get("init"), hyperparameters.get("activation", "leaky_relu")
    if (params.get("model::type") != "CNN" or not isinstance(channels, int) or not isinstance(outputs, int)
            or activation not in ACTIVATIONS):
        return None  # not a network our small-cnn rebuilds: imported with a layout of its own tensors
    config = {"architecture": "small-cnn", "activation": activation,
              "dropout": hyperparameters.get("dropout", 0.0), "init": init if init in INITS else "default"}
    if channels == 1 and outputs == 10:
        return {**config, "dataset": "mnist-idx"}
    return {**config, "input_shape": [channels, INPUT_SIDE, INPUT_SIDE], "output_size": outputs}


def _snapshots(epochs: list[int], results: list[dict]) -> list[dict]:
    by_epoch = {}
    for row in results:
        epoch = row.get("epoch", row.get("training_iteration"))
        if isinstance(epoch, (int, float)):
            by_epoch[int(epoch)] = row
    rows = []
    for k, epoch in enumerate(epochs):
        result = by_epoch.get(epoch, {})
        rows.append(snapshot_row(k, epoch=epoch, step=result.get("step"), gap=result.get("ggap"),
                                 **{name: result.get(name) for name in ("train_loss", "train_acc", "test_loss",
                                                                        "test_acc")}))
    return rows
