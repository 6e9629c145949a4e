"""Sampling: deterministic, prefix-stable, inside the distributions, grid-complete."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightzoo.core.fingerprint import CODE_VERSION, fingerprint
from weightzoo.core.sampling import ModelConfig, grid_size, sample_configs
from weightzoo.core.spec import load_spec

PLAIN_TYPES = (int, float, str, bool)


def random_spec(**overrides):
    spec = {
        "name": "sampled",
        "models": 20,
        "sampling": {"method": "random", "seed": 7},
        "hyperparameters": {
            "dataset": ["mnist5k", "digits"],
            "lr": {"log-uniform": [1.0e-4, 1.0e-1]},
            "dropout": {"uniform": [0.0, 0.5]},
            "conv_layers": {"integer": [2, 4]},
            "optimizer": ["sgd", "adam"],
            "weight_decay": 0,
            "batch_norm": True,
        },
        "training": {"epochs": 3},
        "dataset_options": {"digits": {"path": "/data/digits", "sizes": [1, 2]}},
    }
    spec.update(overrides)
    return load_spec(spec)


def grid_spec(seeds=3, models=None, seed=0):
    spec = {
        "name": "grid",
        "sampling": {"method": "grid", "seeds": seeds, "seed": seed},
        "hyperparameters": {
            "dataset": "digits",
            "activation": ["relu", "tanh", "gelu"],
            "conv_layers": {"integer": [2, 3]},
            "optimizer": ["adam", "sgd"],
        },
        "training": {"epochs": 2},
    }
    if models is not None:
        spec["models"] = models
    return load_spec(spec)


def test_sampling_is_deterministic():
    assert sample_configs(random_spec()) == sample_configs(random_spec())


def test_sampling_count_defaults_to_spec_models_and_n_overrides():
    assert len(sample_configs(random_spec())) == 20
    assert len(sample_configs(random_spec(), 5)) == 5


@pytest.mark.parametrize("spec_factory", [random_spec, grid_spec])
def test_first_configs_are_stable_when_sampling_more(spec_factory):
    spec = spec_factory()
    assert sample_configs(spec, 12)[:7] == sample_configs(spec, 7)


def test_grid_configs_are_stable_when_adding_seeds():
    assert sample_configs(grid_spec(seeds=4))[: grid_size(grid_spec(seeds=2))] == sample_configs(grid_spec(seeds=2))


def test_different_spec_seeds_give_different_configs():
    other = random_spec(sampling={"method": "random", "seed": 8})
    assert [c.params for c in sample_configs(other)] != [c.params for c in sample_configs(random_spec())]


def test_random_values_are_plain_and_within_their_distributions():
    spec = random_spec(models=200)
    for config in sample_configs(spec):
        params = config.params
        assert type(params["seed"]) is int and 0 <= params["seed"] < 2**31
        assert params["architecture"] == "nws-cnn"
        for name, distribution in spec.hyperparameters.items():
            assert type(params[name]) in PLAIN_TYPES, name
            assert distribution.contains(params[name]), (name, params[name])


def test_sampled_values_satisfy_the_schema():
    spec = random_spec(models=50)
    for config in sample_configs(spec):
        fixed = {name: config.params[name] for name in spec.hyperparameters}
        assert load_spec({**spec.to_dict(), "hyperparameters": fixed}).name == spec.name


def test_random_draws_cover_categorical_values():
    values = {c.params["optimizer"] for c in sample_configs(random_spec(models=50))}
    assert values == {"sgd", "adam"}


def test_model_seeds_differ():
    seeds = [c.params["seed"] for c in sample_configs(random_spec(models=100))]
    assert len(set(seeds)) == len(seeds)


def test_grid_size_is_product_of_values_times_seeds():
    configs = sample_configs(grid_spec(seeds=3))
    assert len(configs) == 3 * 3 * 2 * 2 * 1
    assert len({c.hyperparameters for c in configs}) == len(configs)
    assert {c.params["seed"] for c in configs} == {0, 1, 2}


def test_grid_seeds_are_offset_by_the_sampling_seed():
    assert {c.params["seed"] for c in sample_configs(grid_spec(seeds=2, seed=5))} == {5000, 5001}


def test_grid_models_caps_and_too_many_is_an_error():
    assert len(sample_configs(grid_spec(models=5))) == 5
    with pytest.raises(ValueError, match="36"):
        sample_configs(grid_spec(), 37)


def test_architecture_hyperparameter_overrides_the_spec_default():
    spec = random_spec(hyperparameters={"dataset": "digits", "architecture": "mlp"})
    assert {c.params["architecture"] for c in sample_configs(spec)} == {"mlp"}


def test_config_carries_only_its_own_dataset_options():
    for config in sample_configs(random_spec()):
        expected = {"path": "/data/digits", "sizes": [1, 2]} if config.params["dataset"] == "digits" else {}
        assert config.dataset_kwargs == expected
        hash(config)


def test_fingerprint_and_model_id_follow_the_config():
    config = sample_configs(random_spec(), 1)[0]
    expected = fingerprint(config.params, config.training.to_dict(), config.dataset_kwargs, CODE_VERSION)
    assert config.fingerprint(CODE_VERSION) == expected
    assert config.fingerprint("other") != expected
    assert config.model_id == "m" + expected[:15]
    assert isinstance(config, ModelConfig)


def test_model_ids_are_unique_and_independent_of_index_and_spec_name():
    configs = sample_configs(random_spec())
    assert len({c.model_id for c in configs}) == len(configs)
    renamed = sample_configs(random_spec(name="renamed"))
    assert [c.model_id for c in renamed] == [c.model_id for c in configs]


@settings(max_examples=50, deadline=None)
@given(
    low=st.floats(1e-6, 1.0),
    ratio=st.floats(1.001, 1e4),
    seed=st.integers(0, 2**32),
    ilow=st.integers(1, 8),
    span=st.integers(0, 7),
)
def test_draws_stay_inside_random_bounds(low, ratio, seed, ilow, span):
    high = min(low * ratio, 10.0)
    spec = random_spec(
        models=5,
        sampling={"method": "random", "seed": seed},
        hyperparameters={
            "dataset": "digits",
            "lr": {"log-uniform": [low, high]},
            "weight_decay": {"uniform": [low, high]},
            "conv_layers": {"integer": [ilow, min(ilow + span, 8)]},
        },
    )
    for config in sample_configs(spec):
        for name, distribution in spec.hyperparameters.items():
            assert distribution.contains(config.params[name])
            assert not (isinstance(config.params[name], float) and math.isnan(config.params[name]))


def test_only_configs_whose_meaning_changed_carry_the_builder_revision():
    """Every block got a Dropout module: fingerprints change only where trained weights or
    trace names change meaning (a small-cnn with dropout lost its third dropout; traced
    models without dropout have new tensor names)."""
    from weightzoo.core.sampling import BUILDER_REVISION, builder_revision

    assert builder_revision({"architecture": "mlp", "dropout": 0.0}, traced=False) == ()
    assert builder_revision({"architecture": "nws-cnn", "dropout": 0.2}, traced=True) == ()
    assert builder_revision({"architecture": "small-cnn", "dropout": 0.0}, traced=False) == ()
    assert builder_revision({"architecture": "small-cnn", "dropout": 0.5}, traced=False) == (BUILDER_REVISION,)
    assert builder_revision({"architecture": "mlp"}, traced=True) == (BUILDER_REVISION,)
