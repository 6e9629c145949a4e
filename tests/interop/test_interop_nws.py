"""The NWS importer: print_all_vars order, metrics sampling, decoded codes, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interopkit import NWS_ARCH, make_nws_source, nws_sizes, write_nws_network
from weightzoo.core.models import ConfigError
from weightzoo.pipelines.importing import import_in_process
from weightzoo.interop.nws import nws_layout
from weightzoo.io.reader import open_zoo


def test_layout_sizes_match_the_csv_sizes_with_and_without_batch_norm():
    for bn in (True, False):
        layout, n_conv = nws_layout(**NWS_ARCH, batch_norm=bn)
        assert (n_conv, layout.n_params - n_conv) == nws_sizes(bn)
    # depth 5 splits as model.deepnn does: blocks of 1, 2, 2 layers
    layout, _ = nws_layout(filter_size=3, depth_conv=5, depth_fc=2, width_conv=4, width_fc=64, batch_norm=False)
    assert [t.name for t in layout.tensors if t.role == "weight"] == [
        "conv11.weight", "conv21.weight", "conv22.weight", "conv31.weight", "conv32.weight",
        "fc1.weight", "fc2.weight", "fc_final.weight"]
    assert layout.tensor("fc2.weight").shape == (32, 64) and layout.tensor("conv32.weight").shape == (16, 16, 3, 3)


def test_import_reads_weights_in_tf_order_metrics_and_codes(tmp_path, nws_source):
    source, written = nws_source
    report = import_in_process(tmp_path / "zoo", "nws", source)
    assert report["version"] == "v0001" and report["n_accepted"] == 3 and not report["rejected"]
    zoo = open_zoo(tmp_path / "zoo")
    assert len(zoo.models) == 3 and set(zoo.models["source_table"]) == {"nws_main_train.csv"}
    assert set(zoo.models["split"]) == {"train"}, "the networks of nws_main_train.csv are training networks"
    by_lr = zoo.models.sort_values("lr").reset_index(drop=True)
    row = by_lr.iloc[1]  # CSV row 1: optimizer 1, activation 1, initialization 1, augmentation 1
    assert (row["optimizer"], row["activation"], row["init"], row["augmentation"], row["dataset"]) == (
        "rmsprop", "elu", "normal", True, "mnist")
    assert row["depth_conv"] == 3 and row["weightn_conv"] == nws_sizes()[0] and row["n_snapshots"] == 20
    layout = zoo.layout(row["layout_id"])
    variables = dict(written[1][7])  # snapshot file 008.bin is snapshot k=7
    state = layout.unflatten(zoo.weights(row["model_id"], 7))
    assert np.array_equal(state["conv21.weight"].numpy(), variables["conv21_W"].transpose(3, 2, 0, 1).astype(np.float32))
    assert np.array_equal(state["fc1.weight"].numpy(), variables["fc1_W"].T.astype(np.float32))
    assert layout.tensors[-1].name == "fc_final.bias" and layout.indices(kinds=["conv"]).max() < \
        layout.tensor("fc1.weight").offset  # the conv part comes first
    snaps = zoo.snapshots[zoo.snapshots["model_id"] == row["model_id"]].sort_values("k")
    errors = np.fromfile(source / "0002" / "error.bin").reshape(-1, 5)
    picked = np.round(np.linspace(0, 24, 20)).astype(int)
    assert np.allclose(snaps["test_acc"], 1 - errors[picked, 3] / 100)
    assert np.allclose(snaps["step"], errors[picked, 0]) and np.allclose(snaps["epoch"], errors[picked, 0] / 10)
    assert snaps["train_loss"].isna().all()  # NWS stores no losses: null, not invented


def test_load_model_fails_clearly_for_the_tensorflow_architecture(tmp_path, nws_source):
    source, _ = nws_source
    import_in_process(tmp_path / "zoo", "nws", source)
    zoo = open_zoo(tmp_path / "zoo")
    with pytest.raises(ConfigError, match="imported:nws-tensorflow"):
        zoo.load_model(zoo.models["model_id"].iloc[0], 0)


def test_reimport_is_idempotent_and_adding_networks_needs_extend(tmp_path, nws_source):
    source, _ = nws_source
    first = import_in_process(tmp_path / "zoo", "nws", source)
    again = import_in_process(tmp_path / "zoo", "nws", source)
    assert again["version"] == first["version"] == "v0001"
    extra = tmp_path / "more"
    make_nws_source(extra, n=4)  # rows 0-2 hold the same bytes as the first source; row 3 is new
    from weightzoo.pipelines.build import BuildError
    with pytest.raises(BuildError, match="--extend"):
        import_in_process(tmp_path / "zoo", "nws", extra)
    report = import_in_process(tmp_path / "zoo", "nws", extra, extend=True)
    assert report["version"] == "v0002" and len(open_zoo(tmp_path / "zoo").models) == 4


def test_bad_networks_are_reported_by_file_and_good_ones_imported(tmp_path, nws_source):
    source, _ = nws_source
    (source / "0001" / "weights" / "007.bin").unlink()
    truncated = source / "0002" / "weights" / "003.bin"
    truncated.write_bytes(truncated.read_bytes()[:-3])
    write_nws_network(source / "0004", seed=9, bn=False)  # files of a net without batch norm
    with open(source / "nws_main_train.csv", "a") as handle:
        handle.write(f"mnist,0.01,64,True,0,0,0,0,3,3,1,1,4,{nws_sizes()[0]},{nws_sizes()[1]},0004\n")
        handle.write(f"mnist,0.01,64,True,0,7,0,0,3,3,1,1,4,{nws_sizes()[0]},{nws_sizes()[1]},0003\n")
    (source / "broken.csv").write_text("dataset,lrate\nmnist,0.1\n")
    report = import_in_process(tmp_path / "zoo", "nws", source)
    assert report["n_accepted"] == 1 and report["version"] == "v0001"
    reasons = {row["network"]: (row["file"], row["reason"]) for row in report["rejected"]}
    assert reasons["nws_main_train.csv#0"] == (str(source / "0001/weights/007.bin"), "missing file")
    assert reasons["nws_main_train.csv#1"][0].endswith("0002/weights/003.bin")
    assert "truncated" in reasons["nws_main_train.csv#1"][1]
    assert reasons["nws_main_train.csv#3"][0].endswith("0004/weights/001.bin")
    assert "values; the architecture" in reasons["nws_main_train.csv#3"][1]
    assert reasons["nws_main_train.csv#4"] == (f"{source / 'nws_main_train.csv'} row 5", reasons[
        "nws_main_train.csv#4"][1]) and "optimizer code 7 is not one of" in reasons["nws_main_train.csv#4"][1]
    assert reasons["broken.csv"] == (str(source / "broken.csv"), reasons["broken.csv"][1])
    assert "missing columns" in reasons["broken.csv"][1]
    manifest = json.loads((tmp_path / "zoo" / "versions" / "v0001" / "manifest.json").read_text())
    assert len(manifest["specs"][0]["import"]["rejected"]) == 5


def test_the_csv_name_gives_the_split():
    from weightzoo.interop.nws import table_split

    assert [table_split(n) for n in ("nws_main_train.csv", "nws_main_test.csv", "x_valid.csv", "meta.csv")] == [
        "train", "test", "val", None]
