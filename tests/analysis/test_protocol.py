"""Known answers for the evaluation protocol: a planted signal is found with an interval above
chance, a shuffled label stays at chance, folds test every network exactly once, too few
networks are said rather than scored, and chance comes from the training folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from weightzoo.analysis import scoring
from weightzoo.analysis.baselines import majority, methods_for
from weightzoo.analysis.protocol import (Fold, Protocol, check, evaluate, make_folds, run_method, score_methods,
                                         snapshot_choice, target_is_categorical, truth_table)
from weightzoo.core.snapshots import SnapshotChoice
from weightzoo.errors import InputError
from zookit import planted_zoo

FAST = ("majority", "stats-linear")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return planted_zoo(tmp_path_factory.mktemp("protocol") / "zoo", n_models=40)


def _row(results, method, metric):
    rows = results[(results["method"] == method) & (results["metric"] == metric)]
    assert len(rows) == 1, results
    return rows.iloc[0]


def test_a_planted_signal_is_found_with_an_interval_above_chance(zoo):
    results, curve = evaluate(zoo, "planted", methods_for(FAST))
    for metric in ("accuracy", "balanced_accuracy"):
        found, chance = _row(results, "stats-linear", metric), _row(results, "majority", metric)
        assert found["status"] == "ok" and found["n_networks"] == 40
        assert found["ci_low"] > chance["mean"] and found["chance"] == pytest.approx(chance["mean"])
        assert found["ci_low"] <= found["mean"] <= found["ci_high"]
    assert _row(results, "majority", "balanced_accuracy")["mean"] == pytest.approx(0.5)
    assert set(results["snapshots"]) == {"1:"}  # a hyperparameter: the trained snapshots by default
    assert sorted(curve["k"].unique()) == [1, 2]
    assert set(curve["method"]) == set(FAST) and curve["mean"].notna().all()


def test_a_planted_continuous_target_beats_the_training_mean(zoo):
    results, _ = evaluate(zoo, "scale", methods_for(FAST))
    r2, rmse = _row(results, "stats-linear", "r2"), _row(results, "stats-linear", "rmse")
    assert r2["ci_low"] > r2["chance"] and r2["mean"] > 0.3  # 12 values per network give a noisy spread
    assert rmse["ci_high"] < rmse["chance"]
    assert scoring.beats(rmse.to_dict(), rmse["chance"]) and scoring.beats(r2.to_dict(), r2["chance"])


def test_a_shuffled_label_gives_chance_within_the_interval(zoo):
    results, _ = evaluate(zoo, "shuffled", methods_for(FAST))
    for metric in ("accuracy", "balanced_accuracy"):
        row = _row(results, "stats-linear", metric)
        assert row["status"] == "ok" and row["ci_low"] <= row["chance"] <= row["ci_high"], row.to_dict()
        assert not scoring.beats(row.to_dict(), row["chance"])


@pytest.mark.parametrize("target", ["planted", "scale"])
def test_no_network_is_in_two_test_folds_and_every_network_is_tested_once(zoo, target):
    protocol = Protocol(folds=5, seed=3)
    truth = truth_table(zoo, target, snapshot_choice(zoo, target))
    categorical = target_is_categorical(truth)
    folds = make_folds(truth, protocol, categorical)
    tested = [m for fold in folds for m in fold.test_ids]
    assert len(folds) == 5 and sorted(tested) == sorted(set(zoo.models["model_id"]))  # each exactly once
    for fold in folds:
        assert not set(fold.train_ids) & set(fold.test_ids)
        assert set(fold.train_ids) | set(fold.test_ids) == set(tested)
        if categorical:  # stratified: both classes in every test fold
            labels = truth.drop_duplicates("model_id").set_index("model_id").loc[list(fold.test_ids), "truth"]
            assert set(labels) == {"low", "high"}
    predictions = run_method(majority, zoo, folds, target, snapshot_choice(zoo, target), 0)
    assert not predictions.duplicated(["model_id", "k"]).any()
    assert predictions.groupby("model_id")["fold"].nunique().max() == 1  # snapshots never split
    assert make_folds(truth, protocol, categorical) == folds  # seeded
    assert make_folds(truth, Protocol(folds=5, seed=4), categorical) != folds


def test_too_few_networks_gives_a_status_not_a_score(zoo, tmp_path):
    results, curve = evaluate(zoo, "planted", methods_for(FAST), Protocol(min_test_networks=10))
    assert set(results["status"]) == {"too few networks: 8 test networks in fold 0, need >= 10"}
    assert results["mean"].isna().all() and curve.empty
    rare, _ = evaluate(zoo, "rare", methods_for(FAST))
    assert set(rare["status"]) == {"too few networks: class 'c' has 1 network, need >= 2"}
    tiny = planted_zoo(tmp_path / "tiny", n_models=4)
    results, _ = evaluate(tiny, "planted", methods_for(FAST))
    assert set(results["status"]) == {"too few networks: 4 networks for 5 folds"}
    results, _ = evaluate(tiny, "planted", methods_for(FAST), Protocol(folds=2))
    assert set(results["status"]) == {"too few networks: 2 test networks in fold 0, need >= 5"}
    assert results["mean"].isna().all()


def test_chance_is_the_training_folds_majority_applied_to_the_test_fold(zoo):
    truth = truth_table(zoo, "planted", SnapshotChoice.parse("1:"))
    per_network = truth.drop_duplicates("model_id").set_index("model_id")["truth"]
    low, high = sorted(per_network[per_network == "low"].index), sorted(per_network[per_network == "high"].index)
    # training folds mostly "low", test folds all "high": chance is 0 (the test folds' majority share would be 1)
    folds = [Fold(0, tuple(low[:10] + high[:4]), tuple(high[4:10])), Fold(1, tuple(low[10:] + high[10:14]),
                                                                         tuple(high[14:]))]
    predictions = run_method(majority, zoo, folds, "planted", SnapshotChoice.parse("1:"), 0)
    assert set(predictions["prediction"]) == {"low"}
    results, _ = score_methods(truth, {"majority": predictions}, "planted", Protocol(), SnapshotChoice.parse("1:"))
    assert _row(results, "majority", "accuracy")["chance"] == 0.0
    assert check(truth, folds, Protocol(), True) == "ok"
    # regression: the training folds' mean, whatever the test fold holds
    scale = truth_table(zoo, "scale", SnapshotChoice.parse("1:"))
    means = run_method(majority, zoo, folds[:1], "scale", SnapshotChoice.parse("1:"), 0)
    expected = scale[scale["model_id"].isin(folds[0].train_ids)]["truth"].mean()
    assert means["prediction"].to_numpy() == pytest.approx(np.full(len(means), expected))


def test_the_bootstrap_resamples_networks_not_snapshots():
    rng = np.random.default_rng(0)
    networks = np.repeat([f"m{i}" for i in range(20)], 50)  # 20 networks, 50 snapshots each
    correct = np.repeat(rng.random(20) < 0.5, 50)  # a network is right on all its snapshots or none
    frame = pd.DataFrame({"model_id": networks, "truth": "a", "prediction": np.where(correct, "a", "b")})
    row = scoring.score(frame, True, seed=1)[0]
    assert row["n_networks"] == 20 and row["n_samples"] == 1000
    # 20 independent networks: a width near 2 * 1.96 * sqrt(p(1-p)/20) ≈ 0.44, not the 0.06 of 1000 samples
    assert row["ci_high"] - row["ci_low"] > 0.3


def test_bad_options_are_input_errors_naming_the_option(zoo):
    with pytest.raises(InputError, match="--protocol"):
        Protocol(kind="loo")
    with pytest.raises(InputError, match="--folds"):
        Protocol(folds=1)
    with pytest.raises(InputError, match="--methods.*nope"):
        methods_for(["majority", "nope"])
    with pytest.raises(InputError, match="--target.*no_such"):
        truth_table(zoo, "no_such", SnapshotChoice.parse("all"))
    assert snapshot_choice(zoo, "test_acc").text == "all"  # a metric: every snapshot by default
    assert snapshot_choice(zoo, "planted", "0:2").text == "0:2"  # an explicit choice wins


def test_the_fixed_split_is_available(zoo):
    results, _ = evaluate(zoo, "planted", methods_for(FAST), Protocol(kind="split", min_test_networks=1))
    models = zoo.models
    assert set(results["protocol"]) == {"fixed split (train+val → test)"}
    assert set(results["n_networks"]) == {int((models["split"] == "test").sum())}


def test_predict_and_meta_classify_score_with_the_shared_protocol_code():
    from weightzoo.analysis.meta_classifier import MetaClassifier, _metrics
    from weightzoo.analysis.properties import predict_properties

    rng = np.random.default_rng(0)
    n = 60  # 20 train (mostly "a"), 20 val, 20 test (all "b"): chance from train is 0, the test share 1
    labels = np.array(["a"] * 14 + ["b"] * 6 + ["a", "b"] * 10 + ["b"] * 20, dtype=object)
    table = pd.DataFrame({"model_id": [f"m{i // 2}" for i in range(n)], "split": ["train"] * 20 + ["val"] * 20
                          + ["test"] * 20, "layer0.weight.mean": (labels == "b") + 0.1 * rng.normal(size=n),
                          "label": labels})
    results = predict_properties(table, ["label"])
    for _, row in results.iterrows():
        assert row["chance"] == 0.0 and row["metric_2"] == "balanced_accuracy" and row["n_test_networks"] == 10
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["protocol"].startswith("fixed split")
    model = MetaClassifier(None, "optimizer", "classification", ["adam", "sgd"], 100, 1.0, [], baseline=0)
    samples = pd.DataFrame({"model_id": np.repeat([f"m{i}" for i in range(10)], 2), "k": 1,
                            "y": np.repeat([1] * 8 + [0] * 2, 2), "predicted": 1, "local_score": 1.0})
    row = _metrics(model, samples, "all")  # trained on mostly adam (code 0): chance 0.2, not the test share 0.8
    assert row["chance"] == pytest.approx(0.2) and row["global"] == pytest.approx(0.8)
    assert row["balanced_accuracy"] == pytest.approx(0.5) and row["balanced_chance"] == pytest.approx(0.5)
    assert row["ci_low"] < 0.8 < row["ci_high"] and row["protocol"].startswith("fixed split")


def test_sane_probes_train_one_autoencoder_per_fold_on_its_training_networks(zoo, monkeypatch):
    from weightzoo.analysis.sane import fold

    seen = []
    statistics = fold.layer_statistics
    monkeypatch.setattr(fold, "layer_statistics", lambda *a, **kw: seen.append(set(kw["model_ids"])) or
                        statistics(*a, **kw))
    methods = methods_for(["majority", "sane-linear", "sane-boosted"], {"sane_epochs": 1})
    protocol = Protocol(folds=2)
    results, _ = evaluate(zoo, "planted", methods, protocol)
    assert set(results["status"]) == {"ok"} and set(results["n_networks"]) == {40}
    truth = truth_table(zoo, "planted", SnapshotChoice.parse("1:"))
    folds = make_folds(truth, protocol, True)
    assert seen == [set(f.train_ids) for f in folds]  # one training per fold (shared by both probes), test unseen


def test_a_comparison_of_some_networks_folds_only_those(zoo, tmp_path):
    """``where`` (compare --where) picks the networks compared, e.g. one layout for the neural
    functional: folds, figures, headline, summary and cache key all follow it."""
    from weightzoo.analysis.compare import parameters_of, run_compare_study

    (tmp_path / "out").mkdir()
    result = run_compare_study(zoo, tmp_path / "out", "planted", methods=["majority", "stats-linear"],
                               protocol=Protocol(folds=3), where="shuffled == 'x'")
    expected = int((zoo.models["shuffled"] == "x").sum())
    assert {row["n_networks"] for row in result.rows} == {expected} and expected < len(zoo.models)
    assert result.headline.endswith(f"{expected} networks where shuffled == 'x'")
    assert "(networks where shuffled == 'x')" in (tmp_path / "out" / "summary.md").read_text()
    everyone = parameters_of("planted", ["majority"], Protocol(), SnapshotChoice.parse("1:"), None)
    assert "where" not in everyone, "comparisons of every network keep their cache keys"
    assert parameters_of("planted", ["majority"], Protocol(), SnapshotChoice.parse("1:"), None, "a > 1") != everyone
    with pytest.raises(Exception, match="no_such"):
        run_compare_study(zoo, tmp_path / "bad", "planted", methods=["majority"], where="no_such == 1")


@pytest.mark.parametrize("model", ["linear", "boosted"])
def test_a_feature_no_training_network_has_is_left_out(model):
    """Comparing the networks of one layout of a zoo of several, s(W) has columns for layers
    those networks lack: all missing. Boosted trees failed on them ("window shape cannot be
    larger than input array shape", seen on the 10,000-network zoo); they are left out."""
    from weightzoo.analysis.baselines import fit_predict_table

    rng = np.random.default_rng(0)
    n = 60
    label = np.array(["a", "b"] * (n // 2))
    table = pd.DataFrame({"model_id": [f"m{i}" for i in range(n)], "k": 1, "label": label,
                          "layer0.weight.mean": (label == "b") * 2.0 + rng.normal(0, 0.1, n),
                          "layer5.weight.mean": np.nan})
    ids = table["model_id"].tolist()
    predicted = fit_predict_table(table, ids[:40], ids[40:], "label", model=model, seed=0)
    assert (predicted["prediction"].to_numpy() == label[40:]).mean() > 0.9
    with pytest.raises(InputError, match="no feature has a value"):
        fit_predict_table(table, ids[:40], ids[40:], "label", model=model, seed=0, features=["layer5.weight.mean"])


@pytest.mark.parametrize("target", ["planted", "scale"])  # categorical, continuous
def test_a_comparison_with_a_failed_method_is_run_again_reusing_the_methods_that_succeeded(zoo, monkeypatch, target):
    """A failure (a bug fixed since, a worker that died) is not cached as the answer: the next
    run re-runs only the failed method and keeps the others' out-of-fold predictions."""
    from weightzoo.analysis import protocol as protocols
    from weightzoo.analysis.compare import run_compare

    real, calls = protocols.run_method, []

    def flaky(method, zoo_, folds, target, choice, seed, progress, name):
        calls.append(name)
        if name == "stats-linear" and calls.count(name) == 1:
            raise RuntimeError("worker lost")
        return real(method, zoo_, folds, target, choice, seed, progress, name)

    monkeypatch.setattr(protocols, "run_method", flaky)
    kwargs = dict(methods=["majority", "stats-linear"], protocol=Protocol(folds=3, seed=7))
    first = run_compare(zoo, target, **kwargs)
    assert [row["method"] for row in first.failures] == ["stats-linear"] * 2  # two metrics
    assert "worker lost" in first.failures[0]["status"]
    second = run_compare(zoo, target, **kwargs)
    assert not second.cached and not second.failures and second.path == first.path
    assert calls == ["majority", "stats-linear", "stats-linear"], "majority's predictions were reused"
    third = run_compare(zoo, target, **kwargs)
    assert third.cached and len(calls) == 3
    fresh = evaluate(zoo, target, methods_for(["majority", "stats-linear"]), Protocol(folds=3, seed=7))[0]
    got = pd.read_parquet(f"{second.path}/results.parquet")
    assert got["method"].tolist() == fresh["method"].tolist() and np.allclose(got["mean"], fresh["mean"])


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory):
    return planted_zoo(tmp_path_factory.mktemp("layouts") / "zoo", n_models=24, architectures=("mlp", "wide"))


def test_methods_of_one_layout_compare_a_zoo_of_several_layout_by_layout(two_layouts, monkeypatch):
    """raw-linear, the neural functional and the SANE probes read one layout's weights: on a zoo
    of two layouts each fold fits each layout on that layout's training networks, and every
    network is predicted (before, nfn and SANE failed on such a zoo)."""
    from weightzoo.analysis.sane import fold

    zoo = two_layouts
    assert zoo.models["layout_id"].nunique() == 2
    seen = []
    statistics = fold.layer_statistics
    monkeypatch.setattr(fold, "layer_statistics", lambda *a, **kw: seen.append(set(kw["model_ids"])) or
                        statistics(*a, **kw))
    names = ["majority", "raw-linear", "nfn", "sane-linear", "sane-boosted"]
    protocol = Protocol(folds=2)
    results, _ = evaluate(zoo, "planted", methods_for(names, {"nfn_epochs": 2, "sane_epochs": 1}), protocol)
    assert set(results["status"]) == {"ok"}, results[["method", "status"]]
    assert set(results["n_networks"]) == {24}
    layout_of = zoo.models.set_index("model_id")["layout_id"]
    folds = make_folds(truth_table(zoo, "planted", SnapshotChoice.parse("1:")), protocol, True)
    expected = [{m for m in f.train_ids if layout_of[m] == lid} for f in folds for lid in sorted(layout_of.unique())]
    assert seen == expected, "one autoencoder per (fold, layout), trained on that layout's training networks"


def test_a_layout_without_training_networks_in_a_fold_is_named(two_layouts):
    from weightzoo.analysis.baselines import by_layout

    zoo = two_layouts
    wide = sorted(zoo.models.loc[zoo.models["layout_id"] != zoo.models["layout_id"].iloc[0], "model_id"])
    narrow = sorted(set(zoo.models["model_id"]) - set(wide))
    method = by_layout(lambda *a, **kw: pd.DataFrame())
    with pytest.raises(InputError, match="no training network of layout .* --where"):
        method(zoo, narrow[:-1], [narrow[-1], wide[0]], "planted", snapshots="last", seed=0)
