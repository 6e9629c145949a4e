"""Export a published version: to the Model Zoos folder layout, or to one flat bundle file.

Model Zoos (read by their ``ModelDatasetBase``, SANE's datasets and our ``modelzoos``
importer), one folder per model as Ray Tune leaves a trial::

    <out>/<model_id>/params.json          hyperparameters with their Model Zoos names and
                                          values (activation → "model::nlin", leaky_relu →
                                          "leakyrelu", rmsprop → "rms_prop", ...), plus
                                          "weightzoo::config", "weightzoo::model_id",
                                          "weightzoo::split" (this version's split) and
                                          "weightzoo::layer_lst" (the [index, "conv2d"|"fc"]
                                          pairs their loaders take as ``layer_lst``);
                                          small-cnn models also get model::type "CNN",
                                          model::channels_in, model::o_dim, model::nlin,
                                          model::dropout and model::init_type
    <out>/<model_id>/result.json          one JSON line per training_iteration 0..last, as
                                          Ray Tune writes them: line i is iteration i (their
                                          readers index lines by epoch), each with Ray's
                                          "config" object (= params.json); lines of a
                                          snapshot add epoch, k, step, the metrics and ggap
    <out>/<model_id>/checkpoint_<NNNNNN>/checkpoints   the snapshot's state dict (torch.save)
                                          under ``module_list.<index>.<leaf>`` names

Module indices: a small-cnn's are those of their ``def_net.CNN`` (0/4/8/11/14 with dropout,
0/3/6/9/11 without), so their default ``layer_lst`` reads it; other ``nn.Sequential``
models keep their own indices (listed in ``weightzoo::layer_lst``); networks named
otherwise are numbered by layer. Checkpoints are numbered by epoch when every snapshot of
the model has a distinct whole epoch, else by k. Bundle: one ``.npz`` (``numpy.load(path)``)
holding ``weights_<layout_id>`` float32 [models, snapshots, params] (NaN-padded), the
version's ``models.parquet`` (its ``row`` column renumbered to the bundle's rows),
``snapshots.parquet``, ``layouts.parquet`` and ``manifest.json`` as byte arrays, and
``bundle.json`` describing them.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from weightzoo.analysis.records import json_safe, json_value
from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import model_signature
from weightzoo.interop.modelzoos import CONFIG_KEY, LAYERS_KEY, RENAMED, SPLIT_KEY, VALUES
from weightzoo.io import tables
from weightzoo.io.atomic import atomic_directory
from weightzoo.io.location import ZooLocation

BUNDLE_FORMAT = "weightzoo-bundle-1"
TABLES = ("models.parquet", "snapshots.parquet", "layouts.parquet", "manifest.json")
MODELZOOS_NAMES = {name: key for key, name in RENAMED.items() if not key.startswith("weightzoo::")}
MODELZOOS_VALUES = {name: {ours: theirs for theirs, ours in values.items()} for name, values in VALUES.items()}
# module_list indices of the conv/linear modules of their def_net.CNN
SMALL_CNN_INDICES = {True: (0, 4, 8, 11, 14), False: (0, 3, 6, 9, 11)}  # with dropout / without
METRIC_NAMES = ("train_loss", "train_acc", "test_loss", "test_acc")


def export_modelzoos(zoo, out) -> dict:
    """Write every model of ``zoo`` (an opened version) as a Model Zoos folder under ``out``."""
    out = Path(out)
    _refuse_existing(out)
    by_model = dict(tuple(zoo.snapshots.sort_values(["model_id", "k"]).groupby("model_id", sort=False)))
    empty = zoo.snapshots.iloc[:0]
    with atomic_directory(ZooLocation.local(out.parent), out.name, durable=False) as tmp:
        for row in zoo.location.read_table(f"{zoo.folder}/models.parquet").to_pylist():
            _export_model(zoo, row, by_model.get(row["model_id"], empty), tmp / row["model_id"])
    return {"format": "modelzoos", "out": str(out), "version": zoo.version, "n_models": len(zoo.models)}


def module_indices(layout: WeightLayout, config: dict) -> dict[str, int]:
    """The ``module_list`` index of each tensor-owning module of ``layout`` (see the module
    docstring)."""
    owners = list(dict.fromkeys(spec.name.rpartition(".")[0] for spec in layout.tensors))
    if config.get("architecture") == "small-cnn" and len(owners) == 5:
        return dict(zip(owners, SMALL_CNN_INDICES[float(config.get("dropout") or 0.0) > 0]))
    if all(owner.isdigit() for owner in owners):
        return {owner: int(owner) for owner in owners}
    return {owner: number for number, owner in enumerate(owners)}


def modelzoos_state(layout: WeightLayout, flat: np.ndarray, indices: dict[str, int]) -> dict[str, torch.Tensor]:
    """One snapshot as a state dict named ``module_list.<index>.<leaf>``, in layout order."""
    state = {}
    for name, value in layout.unflatten(flat).items():
        owner, _, leaf = name.rpartition(".")
        state[f"module_list.{indices[owner]}.{leaf}"] = value
    return state


def _export_model(zoo, row: dict, snapshots: pd.DataFrame, folder: Path) -> None:
    folder.mkdir()
    config = json.loads(row["config_json"])
    layout = zoo.layout(row["layout_id"])
    indices = module_indices(layout, config)
    params = _params(row, config, layout, indices)
    (folder / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    weights = zoo.weights(row["model_id"])
    numbers = _checkpoint_numbers(snapshots)
    by_number = {}
    for position, ((_, snap), number) in enumerate(zip(snapshots.iterrows(), numbers)):
        target = folder / f"checkpoint_{number:06d}"
        target.mkdir()  # weights are in the order of the model's sorted k (a pulled slice keeps its k)
        torch.save(modelzoos_state(layout, weights[position], indices), target / "checkpoints")
        by_number[number] = snap
    lines = [json.dumps(json_safe(_result_line(i, by_number.get(i), params)), allow_nan=False)
             for i in range(max(numbers) + 1 if numbers else 0)]
    (folder / "result.json").write_text("".join(line + "\n" for line in lines))


def _result_line(iteration: int, snap, params: dict) -> dict:
    """A Ray Tune result line; a snapshot's line carries its metrics (others only the config)."""
    line = {"training_iteration": iteration}
    if snap is not None:
        line.update({"epoch": iteration, "k": snap["k"], "step": snap["step"], "ggap": snap["gap"],
                     **{name: snap[name] for name in METRIC_NAMES}})
    line["config"] = params
    return line


def _params(row: dict, config: dict, layout: WeightLayout, indices: dict[str, int]) -> dict:
    hyper = {name: value for name, value in row.items() if name not in tables.RESERVED and value is not None}
    params = {MODELZOOS_NAMES.get(name, name): _their_value(name, json_value(value)) for name, value in hyper.items()}
    if config.get("architecture") == "small-cnn":
        shape, outputs = model_signature(config)
        params.update({"model::type": "CNN", "model::channels_in": shape[0], "model::o_dim": outputs,
                       "model::nlin": _their_value("activation", config.get("activation", "relu")),
                       "model::dropout": float(config.get("dropout") or 0.0),
                       "model::init_type": config.get("init", "default")})
    kinds = {spec.name.rpartition(".")[0]: spec.kind for spec in layout.tensors if spec.role == "weight"}
    layer_lst = [[indices[owner], "conv2d" if kind == "conv" else "fc"]
                 for owner, kind in kinds.items() if kind in ("conv", "linear")]
    params.update({CONFIG_KEY: config, "weightzoo::model_id": row["model_id"], SPLIT_KEY: row["split"],
                   LAYERS_KEY: layer_lst})
    return params


def _their_value(name: str, value):
    return MODELZOOS_VALUES.get(name, {}).get(value, value) if isinstance(value, str) else value


def _checkpoint_numbers(snapshots: pd.DataFrame) -> list[int]:
    epochs = snapshots["epoch"].tolist()
    whole = all(e is not None and not math.isnan(e) and float(e).is_integer() and e >= 0 for e in epochs)
    if whole and len(set(epochs)) == len(epochs):
        return [int(e) for e in epochs]
    return [int(k) for k in snapshots["k"]]


def export_bundle(zoo, out) -> dict:
    """Write ``zoo`` (an opened version) as one ``.npz`` bundle at ``out``."""
    out = Path(out)
    _refuse_existing(out)
    models = zoo.location.read_table(f"{zoo.folder}/models.parquet")
    arrays, rows, shapes = {}, [0] * models.num_rows, {}
    for layout_id in sorted(set(models.column("layout_id").to_pylist())):
        members = [i for i, value in enumerate(models.column("layout_id").to_pylist()) if value == layout_id]
        ids = [models.column("model_id")[i].as_py() for i in members]
        stacked = _stack(zoo, ids, zoo.layout(layout_id).n_params)
        arrays[f"weights_{layout_id}"] = stacked
        shapes[layout_id] = list(stacked.shape)
        for position, i in enumerate(members):
            rows[i] = position
    models = models.set_column(models.schema.get_field_index("row"), "row", pa.array(rows, pa.int64()))
    arrays["models.parquet"] = _parquet_bytes(models)
    for name in TABLES[1:]:
        arrays[name] = np.frombuffer(zoo.location.read_bytes(f"{zoo.folder}/{name}"), dtype=np.uint8)
    arrays["bundle.json"] = _text_bytes(json.dumps({"format": BUNDLE_FORMAT, "version": zoo.version,
                                                    "source": zoo.handle.url, "weights": shapes}))
    tmp = out.with_name(f"{out.name}.incomplete")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.rename(tmp, out)
    return {"format": "bundle", "out": str(out), "version": zoo.version, "n_models": models.num_rows,
            "bytes": out.stat().st_size}


def _stack(zoo, model_ids: list[str], n_params: int) -> np.ndarray:
    blocks = [zoo.weights(model_id) for model_id in model_ids]
    stacked = np.full((len(blocks), max(len(b) for b in blocks), n_params), np.nan, dtype=np.float32)
    for i, block in enumerate(blocks):
        stacked[i, :len(block)] = block
    return stacked


def read_bundle(path, *, rows: bool = False) -> dict:
    """A bundle's contents: ``models``/``snapshots``/``layouts`` DataFrames (with ``rows``:
    lists of dicts with Python values, ints kept where a column has nulls), ``manifest`` and
    ``bundle`` dicts, and ``weights`` {layout_id: float32 [models, snapshots, params]}."""
    with np.load(path, allow_pickle=False) as data:
        info = json.loads(data["bundle.json"].tobytes())
        if info.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{path}: not a {BUNDLE_FORMAT} file (format {info.get('format')!r})")
        result = {name.removesuffix(".parquet"): _read_table(data[name], rows)
                  for name in TABLES if name.endswith(".parquet")}
        result.update(manifest=json.loads(data["manifest.json"].tobytes()), bundle=info,
                      weights={layout_id: data[f"weights_{layout_id}"] for layout_id in info["weights"]})
    return result


def _read_table(data: np.ndarray, rows: bool):
    table = pq.read_table(io.BytesIO(data.tobytes()))
    return table.to_pylist() if rows else table.to_pandas()


def _parquet_bytes(table: pa.Table) -> np.ndarray:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return np.frombuffer(sink.getvalue(), dtype=np.uint8)


def _text_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _refuse_existing(out: Path) -> None:
    # An export never overwrites: nothing already stored is lost.
    if out.exists():
        raise FileExistsError(f"{out} exists already; choose a new --out path")
