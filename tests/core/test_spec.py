"""Zoo specs: presets load, shorthands parse, errors name fields."""

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzoo.core.spec import (
    Distribution,
    SpecError,
    TrainingSettings,
    ZooSpec,
    load_spec,
)
from weightzoo.presets import list_presets, preset_path

MINIMAL = {
    "name": "minimal",
    "models": 3,
    "hyperparameters": {"dataset": "digits", "lr": {"log-uniform": [1.0e-3, 1.0e-1]}},
    "training": {"epochs": 10},
}


def spec_with(**changes):
    """MINIMAL with dotted-path changes applied; a value of ... deletes the field."""
    spec = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = spec
        for key in parents:
            target = target.setdefault(key, {})
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return spec


# --- presets --------------------------------------------------------------------------


def test_known_presets_are_shipped():
    assert {"smoke", "demo", "nws", "nws-scale", "modelzoo-mnist", "steady-sinusoid",
            "label-corruption"} <= set(list_presets())


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_round_trips(name):
    spec = load_spec(name)
    assert spec.name == name
    assert load_spec(preset_path(name)) == spec
    assert load_spec(spec.to_dict()) == spec
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()


def test_preset_sizes():
    assert load_spec("smoke").models == 4
    assert load_spec("demo").models == 256
    assert load_spec("nws").models == 1000
    scale = load_spec("nws-scale")
    assert scale.models == 10000 and scale.training.snapshot_epochs == tuple(range(1, 21))
    assert scale.training.traces.tensors == ("0.bias",)  # so `trajectories` has a trace to measure
    modelzoo = load_spec("modelzoo-mnist")
    assert modelzoo.sampling == {"method": "grid", "seed": 0, "seeds": 3}
    assert modelzoo.training.snapshot_epochs == tuple(range(1, 26))


def test_unknown_preset_suggests_a_name():
    with pytest.raises(SpecError, match="did you mean 'demo'"):
        load_spec("demoo")


# --- parsing -------------------------------------------------------------------------


def test_shorthands_and_defaults():
    spec = load_spec(spec_with(hyperparameters__batch_norm=True, hyperparameters__activation=["relu", "tanh"]))
    assert spec.hyperparameters["batch_norm"] == Distribution("fixed", (True,))
    assert spec.hyperparameters["activation"] == Distribution("categorical", ("relu", "tanh"))
    assert spec.hyperparameters["lr"] == Distribution("log-uniform", low=1.0e-3, high=1.0e-1)
    assert spec.architecture == "nws-cnn"
    assert spec.sampling == {"method": "random", "seed": 0}
    assert spec.training == TrainingSettings(epochs=10, snapshot_epochs=tuple(range(1, 11)))


def test_numbers_take_the_hyperparameter_type():
    spec = load_spec(spec_with(hyperparameters__weight_decay=0, hyperparameters__conv_layers=3.0))
    assert spec.hyperparameters["weight_decay"].values == (0.0,)
    assert type(spec.hyperparameters["conv_layers"].values[0]) is int


@pytest.mark.parametrize(
    ("snapshots", "epochs", "expected"),
    [
        ({"count": 5}, 10, (2, 4, 6, 8, 10)),
        ({"count": 3}, 10, (3, 7, 10)),
        ({"count": 1}, 4, (4,)),
        ({"count": 4}, 4, (1, 2, 3, 4)),
        ({"epochs": [1, 2, 5, 10]}, 10, (1, 2, 5, 10)),
    ],
)
def test_snapshot_schedules(snapshots, epochs, expected):
    spec = load_spec(spec_with(training={"epochs": epochs, "snapshots": snapshots}))
    assert spec.training.snapshot_epochs == expected


def test_yaml_and_json_files_load_alike(tmp_path):
    yaml_path = tmp_path / "zoo.yaml"
    yaml_path.write_text("name: minimal\nmodels: 3\nhyperparameters:\n  dataset: digits\n"
                         "  lr: {log-uniform: [1e-3, 1e-1]}\ntraining: {epochs: 10}\n")
    json_path = tmp_path / "zoo.json"
    json_path.write_text(json.dumps(MINIMAL))
    assert load_spec(yaml_path) == load_spec(str(json_path)) == load_spec(MINIMAL)
    assert load_spec(yaml_path).raw["hyperparameters"]["lr"] == {"log-uniform": [1e-3, 1e-1]}


def test_with_models_and_hashing():
    spec = load_spec(MINIMAL)
    bigger = spec.with_models(10)
    assert bigger.models == 10 and bigger.raw["models"] == 10
    assert bigger.with_models(3) == spec and hash(bigger.with_models(3)) == hash(spec)
    assert isinstance(spec, ZooSpec)
    with pytest.raises(SpecError, match="models"):
        spec.with_models(0)


def test_dataset_options_and_traces_are_kept():
    spec = load_spec(spec_with(dataset_options={"mnist-idx": {"path": "/data/mnist"}},
                               training__traces={"tensors": ["conv1.bias"], "every": 2}))
    assert spec.dataset_options == {"mnist-idx": {"path": "/data/mnist"}}
    assert spec.training.traces.to_dict() == {"tensors": ["conv1.bias"], "every": 2}
    assert load_spec(spec.to_dict()) == spec
    hash(spec)


def test_spec_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(SpecError("models", "expected an integer")))
    assert (error.field, str(error)) == ("models", "models: expected an integer")


# --- errors --------------------------------------------------------------------------

GRID = {"method": "grid", "seeds": 2}

MALFORMED = [
    ("missing dataset", spec_with(hyperparameters__dataset=...), "hyperparameters.dataset", "required"),
    ("unknown hyperparameter", spec_with(hyperparameters__lrr=0.1), "hyperparameters.lrr", "did you mean 'lr'"),
    ("unknown top-level field", spec_with(epochs=3), "epochs", "unknown field"),
    ("low >= high", spec_with(hyperparameters__dropout={"uniform": [0.4, 0.2]}), "hyperparameters.dropout", "low < high"),
    ("log-uniform equal", spec_with(hyperparameters__lr={"log-uniform": [0.1, 0.1]}), "hyperparameters.lr", "0 < low < high"),
    ("log-uniform negative", spec_with(hyperparameters__lr={"log-uniform": [-1, 1]}), "hyperparameters.lr", "learning rate"),
    ("integer low > high", spec_with(hyperparameters__conv_layers={"integer": [4, 2]}), "hyperparameters.conv_layers", "low <= high"),
    ("even filter range", spec_with(hyperparameters__filter_size={"integer": [3, 7]}), "hyperparameters.filter_size", "odd"),
    ("even filter size", spec_with(hyperparameters__filter_size=4), "hyperparameters.filter_size", "odd"),
    ("negative models", spec_with(models=-1), "models", "minimum"),
    ("random without models", spec_with(models=...), "models", "required"),
    ("snapshot epoch > epochs", spec_with(training__snapshots={"epochs": [1, 12]}), "training.snapshots.epochs", "1..10"),
    ("unsorted snapshots", spec_with(training__snapshots={"epochs": [5, 2]}), "training.snapshots.epochs", "sorted"),
    ("snapshot count > epochs", spec_with(training__snapshots={"count": 11}), "training.snapshots.count", "at most"),
    ("snapshot zero", spec_with(training__snapshots={"epochs": [0, 1]}), "training.snapshots.epochs[0]", "minimum"),
    ("bad optimizer", spec_with(hyperparameters__optimizer="adamw"), "hyperparameters.optimizer", "rmsprop"),
    ("bad optimizer choice", spec_with(hyperparameters__optimizer=["sgd", "adamw"]), "hyperparameters.optimizer", "adamw"),
    ("grid over uniform", spec_with(sampling=GRID, hyperparameters__dropout={"uniform": [0.0, 0.5]}), "hyperparameters.dropout", "grid"),
    ("grid cap too big", spec_with(sampling=GRID, hyperparameters__lr=[0.1, 0.01], models=5), "models", "4"),
    ("seeds with random", spec_with(sampling={"method": "random", "seeds": 2}), "sampling.seeds", "grid"),
    ("wrong type epochs", spec_with(training__epochs="ten"), "training.epochs", "integer"),
    ("wrong type batch_norm", spec_with(hyperparameters__batch_norm="yes"), "hyperparameters.batch_norm", "boolean"),
    ("wrong type name", spec_with(name=5), "name", "string"),
    ("bad name", spec_with(name="My Zoo"), "name", "lowercase"),
    ("bad device", spec_with(training__device="gpu"), "training.device", "cuda"),
    ("unknown dataset option", spec_with(dataset_options={"mnist": {}}), "dataset_options.mnist", "mnist5k"),
    ("categorical dataset distribution", spec_with(hyperparameters__dataset={"uniform": [0, 1]}), "hyperparameters.dataset", "digits"),
    ("not a mapping", ["name", "x"], "", "mapping"),
    ("non-string key", spec_with(hyperparameters={1: 2}), "hyperparameters", "string keys"),
]


@pytest.mark.parametrize(("spec", "field", "words"), [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed_specs_name_the_field(spec, field, words):
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert str(caught.value).startswith(field or "<spec>")


def test_unknown_hyperparameter_lists_known_names():
    with pytest.raises(SpecError, match=r"\(known: activation, .*weight_decay\)"):
        load_spec(spec_with(hyperparameters__optimiser="sgd"))


def test_unreadable_files_are_spec_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
KEYS = st.sampled_from(["name", "models", "sampling", "hyperparameters", "training", "epochs",
                        "dataset", "lr", "method", "seed", "seeds", "snapshots", "count",
                        "uniform", "log-uniform", "integer", "fixed", "categorical", "dataset_options",
                        "filter_size", "traces", "mnist5k"]) | st.text(max_size=6)
JUNK = st.recursive(
    JSON_SCALARS | st.sampled_from(["digits", "grid", "random", "sgd"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(KEYS | st.integers(), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(junk=JUNK)
def test_junk_only_ever_raises_spec_error(junk):
    try:
        load_spec(junk if isinstance(junk, dict) else {"junk": junk})
    except SpecError:
        pass


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(["models", "sampling", "hyperparameters", "training", "name",
                             "training.epochs", "training.snapshots", "hyperparameters.lr",
                             "hyperparameters.dataset", "sampling.seed"]),
       value=JUNK)
def test_junk_in_a_valid_spec_only_ever_raises_spec_error(path, value):
    spec = spec_with(**{path.replace(".", "__"): value})
    spec["sampling"] = spec.get("sampling", {"method": "random"})
    try:
        load_spec(spec)
    except SpecError:
        pass


def test_a_misspelt_required_top_level_key_gets_a_did_you_mean():
    """Issue 18 item 10: `hyperparamters:` names the misspelling, not only the missing field."""
    spec = spec_with()
    spec["hyperparamters"] = spec.pop("hyperparameters")
    with pytest.raises(SpecError, match=r"unknown field 'hyperparamters'; did you mean 'hyperparameters'\?") as info:
        load_spec(spec)
    assert info.value.field == "hyperparamters"
