"""Import the NWS layout of Eilertsen et al., "Classifying the classifier" (ECAI 2020).

What this matches, from github.com/gabrieleilertsen/nws (``classifier.py``, ``model.py``,
``util.py``):

- SOURCE is a CSV file or a folder of them (``nws_main_train.csv`` …); one row per network
  with the 13 columns ``classifier.py`` writes to ``meta.csv`` (dataset, lrate, batch_size,
  batch_norm, augmentation, optimizer, activation, initialization, filter_size, depth_conv,
  depth_fc, width_conv, width_fc), the flat sizes ``weightn_conv`` / ``weightn_fc`` that
  ``util.import_weights`` asserts, and ``path``, the network's output folder.
- ``<path>/weights/001.bin`` … ``020.bin``: ``model.print_all_vars``, raw little-endian
  float64, every TF variable but the optimizer's in creation order: conv weights written
  as [out][in][h][w] and fc weights as [out][in] (torch's own orders), biases, batch-norm
  variables. 001 is the export before the first step (the initialisation), so file k+1
  is snapshot k. The vector is kept in this order: the conv part comes first and slices
  match the paper's.
- ``model.deepnn``: three blocks of ``depth_conv`` conv layers split as ``util`` does
  (width ``width_conv·2^block``, SAME padding, 2×2 max-pool per block) on 32×32×3 input,
  then ``depth_fc`` fc layers of width ``width_fc·2^-i`` and a 20-way ``fc_final``.
- ``<path>/error.bin`` (float64 rows: step, train/valid/test error %, smoothed valid error)
  and ``stat.bin`` (evaluations, steps, epochs, seconds), sampled at the snapshots as
  ``util.import_weights`` does: test accuracy = 1 − test error; train accuracy is their
  running mean over the batches since the last evaluation; epoch = step × epochs / steps.
  Losses are not stored (null); without these files every metric is null.
- The split is the CSV's: networks of ``*_train.csv`` are train, of ``*_test.csv`` test
  (their meta classifier draws its validation part from the training CSV; that draw is
  not stored, so it stays train); a CSV named otherwise gets the usual hashed split.
- Codes decoded: optimizer 0/1/2 = adam/rmsprop/momentum; activation 0–3 =
  relu/elu/sigmoid/tanh; initialization 0–3 = constant/normal/xavier_uniform/xavier_normal.

Assumed (not visible in the code): tensorlayer's BatchNormLayer creates beta, gamma,
moving_mean, moving_variance in that order; a relative ``path`` is relative to the CSV's
folder. No weightzoo builder reproduces this TensorFlow architecture (per-block width
doubling, fc batch norm after the activation, HWC flattening), so ``load_model`` fails.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

import numpy as np

from weightzoo.core.layout import TensorSpec, WeightLayout
from weightzoo.interop.common import ContentDigest, ImportedNetwork, SourceError, snapshot_row, unmapped_config

KIND = "nws"
N_SNAPSHOTS = 20
ARCHITECTURE_COLUMNS = ("filter_size", "depth_conv", "depth_fc", "width_conv", "width_fc")
RENAMED = {"lrate": "lr", "initialization": "init"}
CODES = {"optimizer": ("adam", "rmsprop", "momentum"), "activation": ("relu", "elu", "sigmoid", "tanh"),
         "initialization": ("constant", "normal", "xavier_uniform", "xavier_normal")}
INPUT_CHANNELS, INPUT_SIDE, OUTPUTS, BLOCKS = 3, 32, 20, 3


def list_networks(source: Path) -> list[str]:
    """``<csv name>#<row>`` per network; a CSV that cannot be read is listed by its name alone."""
    handles = []
    for table in _tables(source):
        try:
            rows = _read_table(table)
        except SourceError:
            handles.append(table.name)
            continue
        handles += [f"{table.name}#{i}" for i in range(len(rows))]
    return handles


def network_paths(source: Path, handle: str) -> list[Path]:
    """The files and folders a network is read from: its CSV and its output folder."""
    name, _, index = handle.partition("#")
    table = source if source.is_file() else source / name
    try:
        path = _read_table(table)[int(index)]["path"] if index else None
        folder = Path(path) if path else None
    except (SourceError, IndexError):
        return [table]
    return [table] if folder is None else [table, folder if folder.is_absolute() else table.parent / folder]


def read_network(source: Path, handle: str) -> ImportedNetwork:
    """Read one network (a CSV row, its weight files and its metrics)."""
    name, _, index = handle.partition("#")
    table = source if source.is_file() else source / name
    rows = _read_table(table)
    if not index:
        raise SourceError(table, "no networks listed")
    row = rows[int(index)]
    where = f"{table} row {int(index) + 1}"
    layout, n_conv = nws_layout(**_architecture(row, where))
    _check_sizes(row, where, n_conv, layout.n_params - n_conv)
    if row["path"] is None:
        raise SourceError(where, "empty path")
    folder = Path(row["path"])
    folder = folder if folder.is_absolute() else table.parent / folder
    digest = ContentDigest()
    digest.add("row", repr(sorted((k, v) for k, v in row.items() if k != "path")).encode())
    weights = np.stack([_read_snapshot(folder / "weights" / f"{k:03d}.bin", digest, layout.n_params, where)
                        for k in range(1, N_SNAPSHOTS + 1)])
    hyperparameters = _hyperparameters(row, where, table.name)
    return ImportedNetwork(kind=KIND, name=handle, weights=weights, snapshots=_snapshots(folder, digest),
                           hyperparameters=hyperparameters, config=unmapped_config("nws-tensorflow"),
                           layout=layout, digest=digest.hexdigest(), mapped=False, split=table_split(table.name))


def table_split(name: str) -> str | None:
    """The split a CSV's name gives its networks: the NWS data comes as
    ``nws_main_train.csv`` and ``nws_main_test.csv`` (``meta_classifier.py --data_train
    --data_test``); ``*_val.csv`` / ``*_valid.csv`` are validation. Else None."""
    suffix = Path(name).stem.rpartition("_")[2].lower()
    return {"train": "train", "test": "test", "val": "val", "valid": "val"}.get(suffix)


def nws_layout(filter_size: int, depth_conv: int, depth_fc: int, width_conv: int, width_fc: int,
               batch_norm: bool) -> tuple[WeightLayout, int]:
    """The layout ``model.deepnn`` implies, in ``print_all_vars`` order, and the length of
    its conv part (the offset where the fc part starts)."""
    tensors: list[tuple[str, tuple, str, str]] = []
    channels = INPUT_CHANNELS
    for block, depth in enumerate(_block_depths(depth_conv)):
        width = width_conv * 2 ** block
        for i in range(depth):
            name = f"conv{block + 1}{i + 1}"
            tensors += [(f"{name}.weight", (width, channels, filter_size, filter_size), "weight", "conv"),
                        (f"{name}.bias", (width,), "bias", "conv")] + _batch_norm(name, width, batch_norm)
            channels = width
    n_conv = sum(int(np.prod(shape)) for _, shape, _, _ in tensors)
    features = channels * (INPUT_SIDE // 2 ** BLOCKS) ** 2
    for i in range(depth_fc):
        width = int(width_fc * 2.0 ** -i)
        tensors += [(f"fc{i + 1}.weight", (width, features), "weight", "linear"),
                    (f"fc{i + 1}.bias", (width,), "bias", "linear")] + _batch_norm(f"fc{i + 1}", width, batch_norm)
        features = width
    tensors += [("fc_final.weight", (OUTPUTS, features), "weight", "linear"),
                ("fc_final.bias", (OUTPUTS,), "bias", "linear")]
    return _layout(tensors), n_conv


def _block_depths(depth_conv: int) -> list[int]:
    # model.deepnn: floor(depth/3) per block, the remainder added to the last blocks first
    depths = [depth_conv // BLOCKS] * BLOCKS
    for block in range(BLOCKS - 1, 0, -1):
        if sum(depths) < depth_conv:
            depths[block] += 1
    return depths


def _batch_norm(owner: str, width: int, enabled: bool) -> list[tuple]:
    if not enabled:
        return []
    return [(f"{owner}_bn.{leaf}", (width,), role, "batchnorm")
            for leaf, role in (("beta", "bn_bias"), ("gamma", "bn_weight"), ("moving_mean", "bn_mean"),
                               ("moving_variance", "bn_var"))]


def _layout(tensors) -> WeightLayout:
    specs, offset, layer_of = [], 0, {}
    for name, shape, role, kind in tensors:
        layer = layer_of.setdefault(name.rpartition(".")[0], len(layer_of))
        length = int(np.prod(shape))
        specs.append(TensorSpec(name, tuple(int(s) for s in shape), offset, length, layer, role, kind))
        offset += length
    return WeightLayout(tuple(specs))


def _tables(source: Path) -> list[Path]:
    return [source] if source.is_file() else sorted(source.glob("*.csv"))


def _read_table(path: Path) -> list[dict]:
    """The CSV's rows; parsed once per (path, size, mtime), as every row of a 13,000-row
    table is read as a network of its own."""
    try:
        stat = path.stat()
    except OSError as error:
        raise SourceError(path, f"unreadable CSV: {error}") from None
    return _parse_table(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _parse_table(path: Path, size: int, mtime_ns: int) -> list[dict]:
    try:
        text = path.read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SourceError(path, f"unreadable CSV: {error}") from None
    if not rows:
        raise SourceError(path, "no rows")
    missing = [c for c in ("path", "batch_norm") + ARCHITECTURE_COLUMNS if c not in rows[0]]
    if missing:
        raise SourceError(path, f"missing columns {missing}")
    # path stays text: a folder named "0001" is not the number 1
    return [{key: (text or None) if key == "path" else _value(text) for key, text in row.items() if key is not None}
            for row in rows]


def _value(text):
    """A CSV cell as bool, int, float or str (empty: None), as pandas would read it."""
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _architecture(row: dict, where: str) -> dict:
    values = {}
    for column in ARCHITECTURE_COLUMNS:
        if not isinstance(row[column], int) or row[column] < 1:
            raise SourceError(where, f"{column} must be a positive integer, got {row[column]!r}")
        values[column] = row[column]
    values["batch_norm"] = bool(row["batch_norm"])
    return values


def _check_sizes(row: dict, where: str, n_conv: int, n_fc: int) -> None:
    for column, expected in (("weightn_conv", n_conv), ("weightn_fc", n_fc)):
        if row.get(column) is not None and row[column] != expected:
            raise SourceError(where, f"{column} is {row[column]} but the architecture implies {expected}")


def _read_snapshot(path: Path, digest: ContentDigest, n_params: int, where: str) -> np.ndarray:
    data = digest.read(path, f"weights/{path.name}")
    if len(data) % 8:
        raise SourceError(path, f"truncated: {len(data)} bytes is not a whole number of float64 values")
    values = np.frombuffer(data, dtype="<f8")
    if values.size != n_params:
        raise SourceError(path, f"has {values.size} values; the architecture in {where} has {n_params}")
    return values.astype(np.float32)


def _snapshots(folder: Path, digest: ContentDigest) -> list[dict]:
    """Metrics at each snapshot from error.bin/stat.bin, sampled as util.import_weights does."""
    error_path, stat_path = folder / "error.bin", folder / "stat.bin"
    if not (error_path.is_file() and stat_path.is_file()):
        return [snapshot_row(k) for k in range(N_SNAPSHOTS)]
    errors, stat = (np.frombuffer(digest.read(p, p.name), dtype="<f8") for p in (error_path, stat_path))
    if errors.size % 5 or stat.size != 4:
        raise SourceError(error_path if errors.size % 5 else stat_path, "truncated metrics file")
    errors = errors.reshape(-1, 5)
    evaluations, steps, epochs = int(stat[0]), stat[1], stat[2]
    if not 1 <= evaluations <= len(errors):
        raise SourceError(stat_path, f"names {evaluations} evaluations; error.bin holds {len(errors)}")
    rows = np.round(np.linspace(0, evaluations - 1, N_SNAPSHOTS)).astype(int)
    per_step = epochs / steps if steps > 0 else None
    return [snapshot_row(k, step=errors[r, 0], epoch=None if per_step is None else errors[r, 0] * per_step,
                         train_acc=1 - errors[r, 1] / 100, test_acc=1 - errors[r, 3] / 100)
            for k, r in enumerate(rows)]


def _hyperparameters(row: dict, where: str, table: str) -> dict:
    result = {}
    for column, value in row.items():
        if column == "path":
            continue
        if column in CODES and value is not None and value not in CODES[column]:  # a code, not a name
            if not isinstance(value, int) or not 0 <= value < len(CODES[column]):
                raise SourceError(where, f"{column} code {value!r} is not one of "
                                         f"{dict(enumerate(CODES[column]))}")
            value = CODES[column][value]
        if column in ("batch_norm", "augmentation") and value is not None:
            value = bool(value)
        result[RENAMED.get(column, column)] = value
    result["source_table"] = table
    return result
