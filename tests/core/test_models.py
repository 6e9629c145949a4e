"""Model builders: deterministic, every family builds, bad configs name the key."""

from __future__ import annotations

import pytest
import torch

from weightzoo.core.layout import WeightLayout
from weightzoo.core.models import ACTIVATIONS, Activation, ConfigError, activation_one_hot, build_model
from weightzoo.core.spec import load_spec


def test_same_seed_same_weights_other_seed_other_weights():
    config = {"dataset": "digits", "architecture": "nws-cnn", "init": "orthogonal", "seed": 3}
    a, b = build_model(config).state_dict(), build_model(config).state_dict()
    c = build_model({**config, "seed": 4}).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


@pytest.mark.parametrize("init", ["default", "kaiming_uniform", "kaiming_normal", "xavier_uniform",
                                  "xavier_normal", "orthogonal", "uniform", "normal"])
def test_every_init_gives_finite_weights(init):
    model = build_model({"dataset": "mnist5k", "architecture": "small-cnn", "init": init})
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.parametrize("architecture,dataset,out_shape", [
    ("nws-cnn", "mnist5k", (2, 10)), ("nws-cnn", "digits", (2, 10)), ("small-cnn", "mnist5k", (2, 10)),
    ("large-cnn", "cifar10", (2, 10)), ("mlp", "sinusoid", (2, 1)),
])
def test_families_build_for_their_datasets(architecture, dataset, out_shape):
    model = build_model({"dataset": dataset, "architecture": architecture, "batch_norm": True, "dropout": 0.2})
    shape = {"mnist5k": (1, 28, 28), "digits": (1, 8, 8), "cifar10": (3, 32, 32), "sinusoid": (2,)}[dataset]
    assert model.eval()(torch.randn((2,) + shape)).shape == out_shape


def test_small_cnn_on_digits_is_a_config_error_naming_the_architecture():
    with pytest.raises(ConfigError, match="architecture"):
        build_model({"dataset": "digits", "architecture": "small-cnn"})


@pytest.mark.parametrize("key,value", [("activation", "swish"), ("init", "zeros"), ("architecture", "resnet"),
                                       ("dataset", "imagenet"), ("dropout", 1.5)])
def test_bad_values_name_the_key(key, value):
    config = {"dataset": "digits", "architecture": "mlp", key: value}
    with pytest.raises(ConfigError, match=key):
        build_model(config)


def test_mixed_activation_equals_the_chosen_one_exactly():
    x = torch.linspace(-3, 3, 101)
    for name in ACTIVATIONS:
        module = Activation(name)
        module.active = ACTIVATIONS
        mixed = sum(activation_one_hot(name)[i] * Activation(a)(x) for i, a in enumerate(ACTIVATIONS))
        assert torch.equal(mixed, module(x))


def test_configs_with_one_structure_key_build_one_structure():
    from weightzoo.core.models import structure_key
    from weightzoo.core.sampling import sample_configs
    from weightzoo.presets import list_presets

    seen, n_configs = {}, 0
    for name in list_presets():
        spec = load_spec(name)
        configs = sample_configs(spec, min(60, spec.models)) if spec.models else sample_configs(spec)
        n_configs += len(configs)
        for config in configs:
            model = build_model(config.params)
            structure = (WeightLayout.from_module(model).layout_id, [type(m).__name__ for m in model.modules()])
            assert seen.setdefault(structure_key(config.params), structure) == structure, (name, config.params)
    assert len(seen) < n_configs / 3, "configs share structure keys, so planning builds few models"
