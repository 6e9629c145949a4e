"""training.traces: parsing, validation errors naming the field, unknown tensors caught before
anything trains, and untraced fingerprints unchanged by the feature."""

from __future__ import annotations

import pytest

from weightzoo.core.fingerprint import CODE_VERSION, fingerprint
from weightzoo.core.models import ConfigError, build_model
from weightzoo.core.sampling import BUILDER_REVISION, builder_revision, sample_configs
from weightzoo.core.spec import SpecError, TrainingSettings, load_spec
from weightzoo.core.traces import TraceSettings
from weightzoo.pipelines.build import group_configs
from weightzoo.presets import list_presets
from weightzoo.train.single import train_model

# Fingerprints of PINNED computed by the code before traces existed (commit fe668c9): the
# identity of every existing untraced zoo must stay what it was.
PINNED = {"name": "pinned", "models": 2, "architecture": "mlp",
          "hyperparameters": {"dataset": "sinusoid", "frequency": [0.5, 1.0], "hidden_width": 8, "lr": 0.01,
                              "batch_size": 4},
          "dataset_options": {"sinusoid": {"n_samples": 40}}, "training": {"epochs": 2}}
PINNED_FINGERPRINTS = ["3ca0b81f0f9850492a2c9bd04ef7467c34e993c1d970f0c57a86dbe7090e1850",
                       "536b587ee7691c1ae09bd586c3390eb4f353cd84feb2208c86b55805796d9e1a"]


def traced(traces, **training) -> dict:
    """PINNED with ``training.traces`` (and other training fields) set."""
    return {**PINNED, "training": {**PINNED["training"], **training, "traces": traces}}


def test_untraced_fingerprints_are_unchanged():
    configs = sample_configs(load_spec(PINNED))
    assert [c.fingerprint(CODE_VERSION) for c in configs] == PINNED_FINGERPRINTS
    assert "traces" not in configs[0].training.to_dict()
    legacy = load_spec(traced([]))  # the reserved empty list of older specs means "no traces"
    assert legacy.training.traces is None
    assert [c.fingerprint(CODE_VERSION) for c in sample_configs(legacy)] == PINNED_FINGERPRINTS


def test_traces_parse_round_trip_and_change_identity():
    spec = load_spec(traced({"tensors": ["1.bias", "1.weight"]}))
    assert spec.training.traces == TraceSettings(("1.bias", "1.weight"), every=1)
    assert spec.training.to_dict()["traces"] == {"tensors": ["1.bias", "1.weight"], "every": 1}
    assert load_spec(spec.to_dict()) == spec
    hash(spec)
    fingerprints = [c.fingerprint(CODE_VERSION) for c in sample_configs(spec)]
    assert set(fingerprints).isdisjoint(PINNED_FINGERPRINTS), "traced and untraced models differ in identity"
    every = load_spec(traced({"tensors": ["1.bias"], "every": 5}))
    assert every.training.traces.every == 5
    assert every.training != load_spec(traced({"tensors": ["1.bias"]})).training


@pytest.mark.parametrize(("traces", "field", "message"), [
    ({"tensors": []}, "training.traces.tensors", "non-empty"),
    ({"tensors": "1.bias"}, "training.traces.tensors", "array"),
    ({"tensors": [""]}, "training.traces.tensors[0]", "non-empty"),
    ({"tensors": ["1.bias", "1.bias"]}, "training.traces.tensors", "non-unique"),
    ({"tensors": ["1.bias"], "every": 0}, "training.traces.every", "minimum"),
    ({"tensors": ["1.bias"], "every": 1.5}, "training.traces.every", "integer"),
    ({"tensor": "1.bias"}, "training.traces", "tensors"),
    ([{"tensor": "1.bias", "every": 1}], "training.traces", r"use \{tensors: \[names\]"),
])
def test_malformed_traces_name_the_field(traces, field, message):
    with pytest.raises(SpecError, match=message) as error:
        load_spec(traced(traces))
    assert error.value.field == field


def test_unknown_tensor_fails_at_plan_time_listing_the_known_names():
    with pytest.raises(SpecError, match="unknown tensor 'layers.0.bias'") as error:
        group_configs(sample_configs(load_spec(traced({"tensors": ["1.bias", "layers.0.bias"]}))), "traced")
    assert error.value.field == "training.traces.tensors[1]"
    assert "known tensors: 1.weight, 1.bias, 4.weight, 4.bias" in str(error.value)
    assert "architecture 'mlp'" in str(error.value)


def test_unknown_tensor_fails_before_training(tmp_path):
    training = TrainingSettings(epochs=1, snapshot_epochs=(1,), traces=TraceSettings(("1.bais",)))
    params = {"dataset": "sinusoid", "architecture": "mlp", "hidden_width": 4, "seed": 0}
    with pytest.raises(SpecError, match="did you mean '1.bias'") as error:
        train_model(params, training, {"n_samples": 10})
    assert error.value.field == "training.traces.tensors[0]"


def test_study_presets_ship_and_their_traces_fit_their_models():
    assert {"steady-sinusoid", "label-corruption"} <= set(list_presets())
    for name in ("steady-sinusoid", "label-corruption"):
        spec = load_spec(name)
        assert spec.training.traces == TraceSettings(("1.bias",), every=1)
        assert spec.hyperparameters["batch_size"].values == (1,)
        groups = group_configs(sample_configs(spec), spec.name)  # builds each structure, checks traced tensors
        assert sum(len(g.configs) for g in groups) == (12 if name == "steady-sinusoid" else 8)
        model = build_model(groups[0].configs[0].params)
        assert not model[1].weight.requires_grad and model[1].bias.requires_grad


def test_frozen_identity_input_is_an_mlp_option():
    with pytest.raises(ConfigError, match="frozen_identity_input"):
        build_model({"dataset": "digits", "architecture": "nws-cnn", "frozen_identity_input": True})
    spec = load_spec({**PINNED, "hyperparameters": {**PINNED["hyperparameters"], "frozen_identity_input": [True, False],
                                                   "input_dim": 6}})
    assert {c.params["frozen_identity_input"] for c in sample_configs(spec, 8)} == {True, False}
    with pytest.raises(SpecError, match="input_dim"):
        load_spec({**PINNED, "hyperparameters": {**PINNED["hyperparameters"], "input_dim": 1}})


def test_fingerprint_of_traced_settings_hashes_the_canonical_dict():
    spec = load_spec(traced({"tensors": ["1.bias"]}))
    config = sample_configs(spec)[0]
    # a traced model without dropout names its tensors anew (every block has a Dropout
    # module now), so its fingerprint carries the builders' revision
    assert builder_revision(config.params, traced=True) == (BUILDER_REVISION,)
    expected = fingerprint(config.params, spec.training.to_dict(), config.dataset_kwargs, CODE_VERSION,
                           BUILDER_REVISION)
    assert config.fingerprint(CODE_VERSION) == expected
