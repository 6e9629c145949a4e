"""The Small CNN Zoo of Unterthiner et al. 2020 ("Predicting Neural Network Accuracy from
Weights", google-research ``dnn_predict_accuracy``): import it, and export any version to it.

Per dataset, one folder (what its README and the loaders of NFN and neural graphs read)::

    weights.npy          float32 [rows, params]: one row per checkpoint of a network
    metrics.csv.gz       (or metrics.csv) one row per weights row: config.* hyperparameters
                         (config.activation, config.learning_rate, config.l2reg, config.w_init,
                         config.dropout, config.optimizer, config.train_fraction, ...),
                         modeldir (the network), step (the checkpoint's epoch: 0, 1, 2, 3, 20,
                         40, 60, 80, 86), train/test accuracy and loss
    layout.csv           one row per tensor: varname (Keras, ``.../kernel:0`` or
                         ``.../bias:0``), start_idx, end_idx, shape (a tuple, e.g.
                         ``(3, 3, 1, 16)``); kernels in Keras order (conv [h, w, in, out],
                         dense [in, out])

Import: SOURCE is such a folder, or a folder of them. A network is the rows of one
``modeldir``, snapshot k its k-th checkpoint by step (epoch = step); columns ``config.X``
become hyperparameters (learning_rate → lr, l2reg → weight_decay, w_init → init, others
keep their name); ``modeldir`` becomes ``source_modeldir``. Their CNN (``build_cnn``: 3×3
convs of stride 2 without padding, activation, dropout, global average pooling, a dense
output) is expressible: kernels are transposed to torch's order and the network maps onto
weightzoo's ``unterthiner-cnn`` (``load_model`` works; inputs 1×28×28 for MNIST and
Fashion-MNIST, 1×32×32 for CIFAR-10 and SVHN, which they trained in grayscale). Any other
layout is kept in their order under their names (``load_model`` fails). A row with
non-finite weights makes its network "diverged", as for trained ones.

Export (:func:`export_smallcnnzoo`): one such folder per layout of the version (the
folder itself for a one-layout version, else ``<out>/<layout_id>/``), with kernels in
Keras order, rows of finite snapshots only (the others are listed in the result), metrics
with ``step`` = the snapshot's epoch (its k where epochs are not distinct whole numbers),
our hyperparameters as ``config.*`` (theirs renamed back), and beside their columns ``k``,
``split``, ``model_id`` and ``weightzoo.config``. ``shuffled_idcs.csv`` (row indices in
export order, no header) is the ``idcs_file`` the NFN loaders ask for. Batch-norm tensors
are written under Keras names (``gamma:0``, ``beta:0``, ``moving_mean:0``,
``moving_variance:0``); those loaders accept only kernels and biases.
"""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from weightzoo.core.layout import TensorSpec, WeightLayout
from weightzoo.core.models import ACTIVATIONS, ConfigError, build_model
from weightzoo.interop.common import ContentDigest, ImportedNetwork, SourceError, snapshot_row, unmapped_config
from weightzoo.io import tables

KIND = "smallcnnzoo"
FILES = ("weights.npy", "layout.csv")
METRICS_FILES = ("metrics.csv.gz", "metrics.csv")
RENAMED = {"learning_rate": "lr", "l2reg": "weight_decay", "w_init": "init"}
THEIR_NAMES = {ours: theirs for theirs, ours in RENAMED.items()}
METRICS = {"train_accuracy": "train_acc", "test_accuracy": "test_acc", "train_loss": "train_loss",
           "test_loss": "test_loss"}
INPUT_SIDES = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "svhn_cropped": 32}  # grayscale, 1 channel
KERAS_LEAVES = {"weight": "kernel", "bias": "bias", "bn_weight": "gamma", "bn_bias": "beta",
                "bn_mean": "moving_mean", "bn_var": "moving_variance"}
KERAS_LAYERS = {"conv": "conv2d", "linear": "dense", "batchnorm": "batch_normalization"}


def list_networks(source: Path) -> list[str]:
    """``<dataset folder>#<modeldir>`` per network (``.#<modeldir>`` when SOURCE is one folder)."""
    handles = []
    for folder in _dataset_folders(source):
        label = "." if folder == source else folder.name
        try:
            handles += [f"{label}#{modeldir}" for modeldir in _dataset(folder).networks]
        except SourceError:
            handles.append(f"{label}#")  # read_network reports what is wrong with the folder
    return handles


def network_paths(source: Path, handle: str) -> list[Path]:
    """The dataset folder's three files."""
    folder = _folder(source, handle)
    metrics = next((folder / name for name in METRICS_FILES if (folder / name).exists()), folder / METRICS_FILES[0])
    return [folder / "weights.npy", folder / "layout.csv", metrics]


def read_network(source: Path, handle: str) -> ImportedNetwork:
    """One network: its checkpoint rows, metrics and hyperparameters."""
    folder, modeldir = _folder(source, handle), handle.partition("#")[2]
    data = _dataset(folder)
    rows = data.networks.get(modeldir)
    if rows is None:
        raise SourceError(folder / data.metrics_name, f"no rows for modeldir {modeldir!r}")
    metrics = data.metrics.iloc[rows].sort_values("step", kind="stable")
    raw = np.asarray(data.weights[metrics.index.to_numpy()], dtype=np.float32)
    digest = ContentDigest()
    digest.add("layout.csv", data.layout_bytes)
    digest.add("weights", raw.tobytes())
    digest.add("metrics", metrics.to_csv(index=False).encode())
    hyperparameters = _hyperparameters(metrics.iloc[0], modeldir)
    config, layout, weights = _mapped(data.tensors, raw, hyperparameters, metrics.iloc[0])
    snapshots = [snapshot_row(k, epoch=row["step"], **{ours: row.get(theirs) for theirs, ours in METRICS.items()})
                 for k, (_, row) in enumerate(metrics.iterrows())]
    split = metrics.iloc[0].get("split") if "split" in metrics.columns else None
    return ImportedNetwork(kind=KIND, name=handle, weights=weights, snapshots=snapshots,
                           hyperparameters=hyperparameters, config=config or unmapped_config(KIND), layout=layout,
                           digest=digest.hexdigest(), mapped=config is not None,
                           split=split if split in ("train", "val", "test") else None)


class _Dataset:
    """One dataset folder, parsed once: weights (memory-mapped), metrics, layout tensors."""

    def __init__(self, folder: Path):
        for name in FILES:
            if not (folder / name).is_file():
                raise SourceError(folder / name, "missing file")
        self.metrics_name = next((name for name in METRICS_FILES if (folder / name).is_file()), None)
        if self.metrics_name is None:
            raise SourceError(folder / METRICS_FILES[0], "missing file (metrics.csv.gz or metrics.csv)")
        try:
            self.weights = np.load(folder / "weights.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise SourceError(folder / "weights.npy", f"not a NumPy array file ({error})") from None
        self.layout_bytes = (folder / "layout.csv").read_bytes()
        self.tensors = _layout_rows(folder / "layout.csv", self.layout_bytes, self.weights)
        self.metrics = _metrics(folder / self.metrics_name, len(self.weights))
        self.networks = {str(key): list(group) for key, group in self.metrics.groupby("modeldir", sort=True).indices.items()}


@lru_cache(maxsize=4)
def _parse(folder: str, stamp: tuple) -> _Dataset:
    return _Dataset(Path(folder))


def _dataset(folder: Path) -> _Dataset:
    # parsed once per folder and file state: every network of a 30,000-network file reads it
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file())
    return _parse(str(folder), stamp)


def _dataset_folders(source: Path) -> list[Path]:
    if not source.is_dir():
        raise SourceError(source, "expected a folder holding weights.npy, metrics.csv(.gz) and layout.csv")
    if (source / "weights.npy").exists():
        return [source]
    return sorted(p for p in source.iterdir() if p.is_dir() and (p / "weights.npy").exists())


def _folder(source: Path, handle: str) -> Path:
    label = handle.partition("#")[0]
    return source if label == "." else source / label


def _layout_rows(path: Path, data: bytes, weights) -> list[dict]:
    """layout.csv as [{varname, start, end, shape}] in row order, checked against weights.npy."""
    try:
        table = pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.ParserError) as error:
        raise SourceError(path, f"unreadable CSV ({error})") from None
    missing = [c for c in ("varname", "start_idx", "end_idx", "shape") if c not in table.columns]
    if missing:
        raise SourceError(path, f"missing columns {missing}")
    rows, offset = [], 0
    for number, row in enumerate(table.itertuples(index=False), start=2):
        shape = _shape(row.shape, path, number)
        start, end = int(row.start_idx), int(row.end_idx)
        if start != offset or end - start != int(np.prod(shape)):
            raise SourceError(path, f"line {number}: {row.varname} spans {start}:{end}, expected {offset}:"
                                    f"{offset + int(np.prod(shape))} for shape {shape}")
        rows.append({"varname": str(row.varname), "start": start, "end": end, "shape": shape})
        offset = end
    if weights.ndim != 2 or weights.shape[1] != offset:
        raise SourceError(path.parent / "weights.npy", f"has shape {weights.shape}; layout.csv needs [rows, {offset}]")
    return rows


def _shape(text, path: Path, number: int) -> tuple[int, ...]:
    try:  # a literal tuple, never eval
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        value = None
    value = (value,) if isinstance(value, int) else value
    if not isinstance(value, tuple) or not all(isinstance(v, int) and v > 0 for v in value):
        raise SourceError(path, f"line {number}: shape {text!r} is not a tuple of positive integers")
    return value


def _metrics(path: Path, n_rows: int) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as error:
        raise SourceError(path, f"unreadable CSV ({error})") from None
    missing = [c for c in ("modeldir", "step") if c not in table.columns]
    if missing:
        raise SourceError(path, f"missing columns {missing}")
    if len(table) != n_rows:
        raise SourceError(path, f"has {len(table)} rows; weights.npy has {n_rows}")
    return table


def _hyperparameters(row: pd.Series, modeldir: str) -> dict:
    result = {}
    for column, value in row.items():
        if not str(column).startswith("config.") or pd.isna(value):
            continue
        name = str(column).removeprefix("config.")
        result[RENAMED.get(name, name)] = value.item() if isinstance(value, np.generic) else value
    result["source_modeldir"] = modeldir
    return result


def _mapped(tensors: list[dict], raw: np.ndarray, hyperparameters: dict, first: pd.Series):
    """(config, layout, weights): their CNN as weightzoo's unterthiner-cnn (kernels transposed
    to torch's order) when it is one, else (None, their layout, raw rows)."""
    config = _config(tensors, hyperparameters, first)
    if config is not None:
        try:
            layout = WeightLayout.from_module(build_model(config))
        except (ConfigError, ValueError, KeyError):
            layout = None
        if layout is not None and [t.shape for t in layout.tensors] == [_torch_shape(t) for t in tensors]:
            return config, layout, np.concatenate([_to_torch(raw[:, t["start"]:t["end"]], t) for t in tensors], axis=1)
    return None, _their_layout(tensors), raw


def _config(tensors: list[dict], hyperparameters: dict, first: pd.Series) -> dict | None:
    stored = first.get("weightzoo.config") if "weightzoo.config" in first.index else None
    if isinstance(stored, str):
        return json.loads(stored)  # our own export: the version's config
    kernels = [t["shape"] for t in tensors if t["varname"].endswith("kernel:0")]
    convs = [s for s in kernels if len(s) == 4]
    activation = hyperparameters.get("activation", "relu")
    if (len(tensors) != 2 * len(kernels) or len(convs) != len(kernels) - 1 or len(kernels[-1]) != 2
            or activation not in ACTIVATIONS or any(s[:2] != (3, 3) for s in convs)
            or len({s[3] for s in convs}) != 1 or convs[0][2] != 1):
        return None
    side = INPUT_SIDES.get(str(hyperparameters.get("dataset")), 32)
    return {"architecture": "unterthiner-cnn", "input_shape": [1, side, side], "output_size": kernels[-1][1],
            "conv_layers": len(convs), "conv_width": convs[0][3], "activation": activation,
            "dropout": float(hyperparameters.get("dropout") or 0.0)}


def _torch_shape(tensor: dict) -> tuple[int, ...]:
    shape = tensor["shape"]
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape)) if len(shape) == 2 else shape


def _to_torch(block: np.ndarray, tensor: dict) -> np.ndarray:
    """[rows, values] of one Keras tensor → the same values in torch's order."""
    shape = tensor["shape"]
    if len(shape) not in (2, 4):
        return block
    axes = (0, 4, 3, 1, 2) if len(shape) == 4 else (0, 2, 1)
    return block.reshape(len(block), *shape).transpose(axes).reshape(len(block), -1)


def _to_keras(block: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """[rows, values] of one weightzoo tensor → Keras order (conv [h, w, in, out], dense [in, out])."""
    if spec.role != "weight" or len(spec.shape) not in (2, 4):
        return block
    axes = (0, 3, 4, 2, 1) if len(spec.shape) == 4 else (0, 2, 1)
    return block.reshape(len(block), *spec.shape).transpose(axes).reshape(len(block), -1)


def _their_layout(tensors: list[dict]) -> WeightLayout:
    specs, layer_of = [], {}
    for t in tensors:
        owner, _, leaf = t["varname"].rpartition("/")
        kind = "conv" if len(t["shape"]) >= 3 else "linear" if len(t["shape"]) == 2 else "other"
        if leaf.startswith("bias") and owner in layer_of:
            kind = next(s.kind for s in specs if s.layer == layer_of[owner])
        role = "weight" if leaf.startswith("kernel") else "bias" if leaf.startswith("bias") else leaf.split(":")[0]
        layer = layer_of.setdefault(owner, len(layer_of))
        specs.append(TensorSpec(t["varname"], t["shape"], t["start"], t["end"] - t["start"], layer, role, kind))
    return WeightLayout(tuple(specs))


def export_smallcnnzoo(zoo, out) -> dict:
    """Write ``zoo`` (an opened version) in the Small CNN Zoo layout under ``out``."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists already; choose a new --out path")
    tmp = out.with_name(f"{out.name}.incomplete")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    layout_ids = sorted(zoo.models["layout_id"].unique())
    skipped, folders = [], {}
    for layout_id in layout_ids:
        target = tmp if len(layout_ids) == 1 else tmp / layout_id
        target.mkdir(exist_ok=True)
        skipped += _export_layout(zoo, layout_id, target)
        folders[layout_id] = str(out if len(layout_ids) == 1 else out / layout_id)
    os.rename(tmp, out)
    return {"format": "smallcnnzoo", "out": str(out), "version": zoo.version, "n_models": len(zoo.models),
            "folders": folders, "skipped": skipped}


def _export_layout(zoo, layout_id: str, folder: Path) -> list[dict]:
    layout = zoo.layout(layout_id)
    models = zoo.models[zoo.models["layout_id"] == layout_id]
    snapshots = zoo.snapshots.set_index(["model_id", "k"])
    rows, metrics, skipped = [], [], []
    for model in models.to_dict("records"):
        weights = zoo.weights(model["model_id"])
        own = snapshots.loc[model["model_id"]].sort_index()
        steps = _steps(own)
        for position, (k, step) in enumerate(zip(own.index, steps)):  # weights in the order of the sorted k
            if not np.isfinite(weights[position]).all():
                skipped.append({"model_id": model["model_id"], "k": int(k), "reason": "non-finite weights"})
                continue
            rows.append(weights[position])
            metrics.append(_metrics_row(model, own.loc[k], int(k), step))
    flat = np.stack(rows) if rows else np.zeros((0, layout.n_params), dtype=np.float32)
    parts = [_to_keras(flat[:, t.offset:t.offset + t.length], t) for t in layout.tensors]
    np.save(folder / "weights.npy", np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32))
    pd.DataFrame(metrics).to_csv(folder / "metrics.csv.gz", index=False, compression="gzip")
    _layout_table(layout).to_csv(folder / "layout.csv")
    np.savetxt(folder / "shuffled_idcs.csv", np.arange(len(rows)), fmt="%d")
    return skipped


def _steps(snapshots: pd.DataFrame) -> list[int]:
    epochs = snapshots["epoch"].tolist()
    if all(pd.notna(e) and float(e).is_integer() and e >= 0 for e in epochs) and len(set(epochs)) == len(epochs):
        return [int(e) for e in epochs]
    return [int(k) for k in snapshots.index]


def _metrics_row(model: dict, snap: pd.Series, k: int, step: int) -> dict:
    row = {f"config.{THEIR_NAMES.get(name, name)}": value for name, value in model.items()
           if name not in tables.RESERVED and value is not None}
    row.update({"modeldir": model["model_id"], "step": step, "test_accuracy": snap["test_acc"],
                "test_loss": snap["test_loss"], "train_accuracy": snap["train_acc"], "train_loss": snap["train_loss"],
                "k": k, "split": model["split"], "model_id": model["model_id"],
                "weightzoo.config": model["config_json"]})
    return row


def _layout_table(layout: WeightLayout) -> pd.DataFrame:
    """layout.csv: Keras variable names (conv2d, conv2d_1, ..., dense, ...), Keras shapes."""
    counts, names, rows = {}, {}, []
    for spec in layout.tensors:
        owner = spec.name.rpartition(".")[0]
        if owner not in names:
            base = KERAS_LAYERS.get(spec.kind, spec.kind)
            names[owner] = base if counts.get(base, 0) == 0 else f"{base}_{counts[base]}"
            counts[base] = counts.get(base, 0) + 1
        shape = spec.shape
        if spec.role == "weight" and len(shape) == 4:
            shape = (shape[2], shape[3], shape[1], shape[0])
        elif spec.role == "weight" and len(shape) == 2:
            shape = (shape[1], shape[0])
        rows.append({"varname": f"sequential/{names[owner]}/{KERAS_LEAVES.get(spec.role, spec.role)}:0",
                     "start_idx": spec.offset, "end_idx": spec.offset + spec.length, "size": spec.length,
                     "shape": str(tuple(shape))})
    return pd.DataFrame(rows)
