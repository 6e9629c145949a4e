"""Selections: filters, splits, snapshot ranges, parts, Dask/NumPy arrays and torch batches."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from zookit import publish_staged

from weightzoo.io.reader import open_zoo
from weightzoo.io import selection as selection_module
from weightzoo.io.version_weights import clear_readers


@pytest.fixture
def zoo(zoo_root, stage):
    """Six conv nets (4 snapshots), one diverged conv net (3) and three MLPs (3)."""
    fingerprints = (stage("conv", range(6), n_snapshots=4) + stage("conv", [9], status="diverged")
                    + stage("mlp", range(3)))
    publish_staged(zoo_root, fingerprints)
    return open_zoo(zoo_root)


def expected(zoo, selection, **indices) -> np.ndarray:
    """Direct reads: zoo.weights per model, sliced by k and by layout.indices(**indices)."""
    parts = []
    for model in selection.models.itertuples():
        ks = selection.rows.loc[selection.rows["model_id"] == model.model_id, "k"].to_numpy()
        parts.append(zoo.weights(model.model_id)[ks][:, zoo.layout(model.layout_id).indices(**indices)])
    return np.concatenate(parts)


def test_keyword_and_where_filters_select_the_right_models(zoo):
    models = zoo.models
    chosen = zoo.select(dataset="mnist", optimizer="sgd")
    assert set(chosen.models.model_id) == {"conv-000", "conv-002", "conv-004"}
    query = zoo.select("dataset == 'mnist' and lr < 0.07")
    wanted = models[(models.dataset == "mnist") & (models.lr < 0.07) & (models.status == "ok")]
    assert set(query.models.model_id) == set(wanted.model_id) and len(wanted) > 0
    assert set(zoo.select(model_id=["mlp-001", "conv-003"]).models.model_id) == {"mlp-001", "conv-003"}
    # Diverged runs are left out unless status=None.
    assert "conv-009" not in set(zoo.select(dataset="mnist").models.model_id)
    assert "conv-009" in set(zoo.select(dataset="mnist", status=None).models.model_id)
    assert len(zoo.select(dataset="mnist")) == 6 * 4
    assert len(zoo.select()) == 6 * 4 + 3 * 3


def test_unknown_columns_and_empty_selections_get_clear_errors(zoo):
    with pytest.raises(ValueError, match=r"unknown column 'colour'.*optimizer"):
        zoo.select(colour="red")
    with pytest.raises(ValueError, match=r"colour.*columns.*optimizer"):
        zoo.select("colour == 'red'")
    with pytest.raises(ValueError, match=r"unknown split \['tset'\]"):
        zoo.select(split="tset")
    with pytest.raises(ValueError, match=r"part must be one of"):
        zoo.select(part="head")
    with pytest.raises(ValueError, match=r"unknown column 'nope'"):
        zoo.select().labels("nope")
    empty = zoo.select(dataset="cifar10")
    assert len(empty) == 0
    with pytest.raises(ValueError, match=r"selection is empty.*cifar10"):
        empty.to_numpy()


def test_splits_are_by_model_and_never_mix_snapshots(zoo):
    selections = {split: zoo.select(split=split) for split in ("train", "val", "test")}
    seen = Counter()
    for split, chosen in selections.items():
        assert set(chosen.rows["split"]) <= {split}
        seen.update(set(chosen.models.model_id))
        # Every selected model brings all of its snapshots.
        counts = chosen.rows.groupby("model_id").size()
        assert counts.to_dict() == chosen.models.set_index("model_id").n_snapshots.to_dict()
    assert set(seen) == set(zoo.select().models.model_id) and max(seen.values()) == 1
    both = zoo.select(split=["train", "val"])
    assert len(both) == len(selections["train"]) + len(selections["val"])


def test_snapshot_range_and_part_select_the_right_columns(zoo):
    chosen = zoo.select(dataset="mnist", snapshots=range(1, 3), part="conv")
    assert sorted(set(chosen.rows.k)) == [1, 2] and len(chosen) == 6 * 2
    np.testing.assert_array_equal(chosen.to_numpy(), expected(zoo, chosen, kinds=["conv"]))
    fc = zoo.select(dataset="mnist", snapshots=slice(2, None), part="fc")
    assert fc.n_features == zoo.layout(fc.models.layout_id[0]).indices(kinds=["linear"]).size
    np.testing.assert_array_equal(fc.to_numpy(), expected(zoo, fc, kinds=["linear"]))
    narrow = zoo.select(dataset="digits", snapshots=[0, 2], layers=[1], tensors=["2.bias"])
    assert narrow.n_features == 2
    np.testing.assert_array_equal(narrow.to_numpy(), expected(zoo, narrow, layers=[1], names=["2.bias"]))


def test_bad_snapshots_and_parts_name_the_problem(zoo):
    with pytest.raises(ValueError, match=r"k=4 .*conv-000.*n_snapshots=4"):
        zoo.select(dataset="mnist", snapshots=range(2, 5))
    with pytest.raises(ValueError, match=r"k=3 .*mlp-000.*n_snapshots=3"):
        zoo.select(snapshots=slice(0, 4))
    with pytest.raises(ValueError, match=r"k=-1 .*negative"):
        zoo.select(snapshots=[-1])
    with pytest.raises(ValueError, match=r"part='conv'.*no weights of layout L.*layout_id !="):
        zoo.select(part="conv")  # the MLPs have no conv part
    with pytest.raises(ValueError, match=r"no tensor \['9.weight'\]"):
        zoo.select(dataset="digits", tensors=["9.weight"])


def test_dask_equals_numpy_equals_direct_reads_with_row_aligned_chunks(zoo):
    chosen = zoo.select(dataset="mnist", snapshots=[0, 1, 3])
    array = chosen.to_dask(chunk_samples=5)
    # Two models (6 samples) per chunk: chunks end on model boundaries and hold ≥ 5 samples.
    assert array.chunks == ((6, 6, 6), (chosen.n_features,)) and array.dtype == np.float32
    clear_readers()  # tasks open the array themselves
    computed = array.compute(scheduler="sync")
    np.testing.assert_array_equal(computed, chosen.to_numpy())
    np.testing.assert_array_equal(computed, expected(zoo, chosen))
    assert list(chosen.rows.k[:3]) == [0, 1, 3] and len(chosen.to_dask().chunks[0]) == 1


def test_mixed_layouts_need_one_length_or_by_layout(zoo):
    mixed = zoo.select(part="fc")
    with pytest.raises(ValueError, match=r"different feature lengths.*layout_id"):
        mixed.to_dask()
    per_layout = mixed.by_layout()
    assert set(per_layout) == set(zoo.models.layout_id)
    for layout_id, part in per_layout.items():
        assert set(part.rows.layout_id) == {layout_id}
        np.testing.assert_array_equal(part.to_dask().compute(), expected(zoo, part, kinds=["linear"]))
    assert sum(len(part) for part in per_layout.values()) == len(mixed)


def test_labels_and_classes(zoo):
    chosen = zoo.select()
    assert chosen.classes("optimizer") == ["adam", "sgd"]
    codes = chosen.label_values("optimizer")
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(np.array(chosen.classes("optimizer"))[codes], chosen.labels("optimizer"))
    assert chosen.label_values("lr").dtype == np.float32
    assert chosen.label_values("augment").dtype == np.int64  # bool → codes of [False, True]
    # a few-valued integer is a category too: codes, never the raw values (a batch size of 32
    # as a class index would be out of range for a 2-class classifier)
    assert chosen.classes("batch_size") == [16, 32]
    np.testing.assert_array_equal(np.array([16, 32])[chosen.label_values("batch_size")], chosen.labels("batch_size"))
    np.testing.assert_array_equal(chosen.labels("test_acc"), chosen.rows.test_acc)  # per-snapshot column
    width = chosen.label_values("width")  # numeric with nulls: NaN where a model lacks it
    assert np.isnan(width[chosen.rows.dataset == "mnist"]).all() and (width[chosen.rows.dataset == "digits"] == 5).all()


def test_torch_batches_cover_every_sample_once_per_epoch(zoo):
    chosen = zoo.select(dataset="mnist")
    data = chosen.to_numpy()
    codes = chosen.label_values("optimizer")
    batches = chosen.torch_batches(5, label="optimizer", cache_rows=2)
    assert len(batches) == 5
    orders = []
    for _ in range(2):
        indices = []
        for batch in batches:
            index = batch["index"].numpy()
            assert batch["weights"].dtype == torch.float32 and batch["label"].dtype == torch.int64
            np.testing.assert_array_equal(batch["weights"].numpy(), data[index])
            np.testing.assert_array_equal(batch["label"].numpy(), codes[index])
            assert batch["model_id"] == list(chosen.rows.model_id.to_numpy()[index])
            np.testing.assert_array_equal(batch["k"].numpy(), chosen.rows.k.to_numpy()[index])
            assert (batch["offset"] == 0).all()
            indices.extend(index.tolist())
        assert sorted(indices) == list(range(len(chosen)))
        orders.append(indices)
    assert orders[0] != orders[1], "each epoch shuffles anew"
    unshuffled = [b["index"].tolist() for b in chosen.torch_batches(7, shuffle=False, drop_last=True, prefetch=0)]
    assert unshuffled == [list(range(i, i + 7)) for i in range(0, 21, 7)]


def test_random_slices_have_the_right_length_and_fresh_offsets(zoo):
    chosen = zoo.select(snapshots=[1, 2])  # both layouts: slices only need length ≤ every layout's
    lengths = chosen.rows.layout_id.map(chosen.feature_lengths).to_numpy()
    full = {layout_id: part.to_numpy() for layout_id, part in chosen.by_layout().items()}
    position = chosen.rows.groupby("layout_id").cumcount().to_numpy()
    batches = chosen.torch_batches(4, slice_length=30, label="lr", seed=3)
    offsets = []
    for _ in range(2):
        epoch = {}
        for batch in batches:
            assert batch["weights"].shape[1] == 30 and batch["label"].dtype == torch.float32
            for row, index, offset in zip(batch["weights"].numpy(), batch["index"].tolist(), batch["offset"].tolist()):
                assert 0 <= offset <= lengths[index] - 30
                vector = full[chosen.rows.layout_id[index]][position[index]]
                np.testing.assert_array_equal(row, vector[offset:offset + 30])
                epoch[index] = offset
        assert sorted(epoch) == list(range(len(chosen)))
        offsets.append([epoch[i] for i in range(len(chosen))])
    assert offsets[0] != offsets[1], "offsets are drawn again each epoch"
    runs = [[b["offset"].tolist() for b in chosen.torch_batches(4, slice_length=30, seed=3)] for _ in range(2)]
    assert runs[0] == runs[1], "the same seed draws the same offsets"
    with pytest.raises(ValueError, match=r"slice_length=200 .*smallest"):
        chosen.torch_batches(4, slice_length=200)
    with pytest.raises(ValueError, match=r"different feature lengths"):
        chosen.torch_batches(4)


def test_stopping_early_releases_the_prefetch_thread(zoo):
    batches = iter(zoo.select(dataset="mnist").torch_batches(2, prefetch=1))
    first = next(batches)
    batches.close()
    assert first["weights"].shape[0] == 2


def test_dataloader_with_two_workers_yields_every_sample_once(zoo):
    chosen = zoo.select(dataset="mnist", snapshots=range(2, 4), part="fc")
    loader = chosen.torch_loader(3, num_workers=2, slice_length=8, label="optimizer")
    epochs = []
    for _ in range(2):
        batches = list(loader)
        seen = [index for batch in batches for index in batch["index"].tolist()]
        assert sorted(seen) == list(range(len(chosen)))
        epochs.append({i: o for b in batches for i, o in zip(b["index"].tolist(), b["offset"].tolist())})
    assert epochs[0] != epochs[1], "persistent workers advance their epoch"


def test_forked_workers_fail_fast_instead_of_hanging(zoo):
    dataset = zoo.select(dataset="mnist").torch_dataset(4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(RuntimeError, match=r"fork.*spawn"):
        next(iter(loader))


def test_smoke_zoo_selection_matches_direct_reads(smoke_zoo):
    zoo = open_zoo(smoke_zoo)
    chosen = zoo.select(snapshots=slice(1, None), status=None)
    np.testing.assert_array_equal(chosen.to_dask().compute(), expected(zoo, chosen))
    assert chosen.to_numpy().dtype == np.float32 and len(chosen) == int((zoo.models.n_snapshots - 1).sum())


def test_model_ids_and_max_models_filter_like_every_other_column(zoo):
    chosen = zoo.select(model_ids=["mlp-001", "conv-003"], snapshots="last")
    assert set(chosen.models.model_id) == {"mlp-001", "conv-003"} and len(chosen) == 2
    with pytest.raises(ValueError, match=r"unknown model id\(s\) \['m-nope'\]"):
        zoo.select(model_ids=["conv-000", "m-nope"])
    table_order = list(zoo.models.loc[zoo.models.status == "ok", "model_id"])
    assert set(zoo.select(max_models=4).models.model_id) == set(table_order[:4]), "the first in table order"
    assert set(zoo.select(dataset="digits", max_models=2).models.model_id) == {"mlp-000", "mlp-001"}
    with pytest.raises(ValueError, match="max_models must be a positive integer"):
        zoo.select(max_models=0)
    with pytest.raises(ValueError, match=r"selection is empty: no models match .*'model_ids': \['conv-009'\]"):
        zoo.select(model_ids=["conv-009"]).require_samples()  # diverged: left out by status="ok"


def test_open_ended_snapshots_adapt_to_each_model_and_exact_ones_never_shrink(zoo):
    last = zoo.select(snapshots="last", status=None)
    expected = {m.model_id: [m.n_snapshots - 1] for m in zoo.models.itertuples()}
    assert {m: ks.tolist() for m, ks in last.snapshot_indices.items()} == expected
    assert list(last.snapshot_indices) == list(last.models.model_id), "in the order of selection.models"
    tail = zoo.select(snapshots="2:")
    assert {len(ks) for m, ks in tail.snapshot_indices.items()} == {1, 2}  # 3 and 4 snapshots
    with pytest.raises(ValueError, match=r"'0:4' ask for k=3 but model 'mlp-000' has n_snapshots=3"):
        zoo.select(snapshots="0:4")  # the conv nets have 4 snapshots, the MLPs 3: an error, not a shrink


def test_iter_models_yields_every_model_with_its_weights_in_storage_order(zoo):
    chosen = zoo.select(snapshots=[0, 2], part="fc", status=None)
    seen = []
    for model, ks, weights in chosen.iter_models(block_bytes=1):  # one model per read block
        layout = zoo.layout(model.layout_id)
        np.testing.assert_array_equal(weights, zoo.weights(model.model_id)[ks][:, layout.indices(kinds=["linear"])])
        assert ks.tolist() == [0, 2] and weights.dtype == np.float32
        seen.append(model.model_id)
    assert seen == list(chosen.models.model_id)
    everything = {m.model_id: (ks, w) for m, ks, w in chosen.iter_models(all_snapshots=True)}
    for model in chosen.models.itertuples():
        ks, weights = everything[model.model_id]
        assert weights.shape[0] == model.n_snapshots and ks.tolist() == [0, 2]
    positions = [4, 0, 9]
    read = chosen.read_models(positions)
    for position, weights in zip(positions, read):
        model_id = chosen.models.at[position, "model_id"]
        np.testing.assert_array_equal(weights, next(w for m, _, w in chosen.iter_models() if m.model_id == model_id))


def test_batches_use_only_the_public_selection_api():
    source = Path(selection_module.__file__).with_name("batches.py").read_text()
    assert not re.search(r"selection\._|_require_samples|\bread_rows\b", source), "batches reach into Selection"
