"""Pinned identities: the shipped presets load to the same spec and the same first models.

The hashes were computed before the schema and its Python table came from one source; a
change to how specs are parsed or coerced that would rename existing models fails here.
"""

import pytest

from weightzoo.core.fingerprint import fingerprint
from weightzoo.core.sampling import sample_configs
from weightzoo.core.spec import load_spec

SPEC_FINGERPRINTS = {
    "demo": "f2984e638aee7d5b561303acde77bdd00c2ab86fc8c8664d5c5c8f994aa63917",
    "label-corruption": "1ee52fee3431b95f28dc5ce38723cdba94c20d2bc4374e282aa485948d93d061",
    "modelzoo-mnist": "b6c8ebaa6b04f3adc160f04d4e6c68bd24886c9d8a926be64c1e9ea7a17f667d",
    "nws": "3edba8d38dea916a094065168b850c0cb8cda9049fee84e317c006cf94b61c30",
    "smoke": "c6d580a9374f3aff991586052ff468d4764166d3592267f911b3066f59b6d6a4",
    "steady-sinusoid": "0da92b6034a3706fa60f74118bf5723a9306a5453b1c57f4cc393e61985f6988",
}

FIRST_MODEL_FINGERPRINTS = {
    "demo": [
        "a292e7bbf6f570e39a972630f1323a9d6c3d63a499ad21d0ed3d4e6ea887eec4",
        "fde548d6780c01c58e5b873e06a78b596ecf90a96394f7580a4d963e9a350573",
        "5d833a602e8dbb6d13fca5fa57551fe4df9c8fb13014a5d1792ae71699f00cf4",
        "e5ba5558bfb825e51eb920f351069c78999086a49bf6a5b5f32db8b03e6d32cd",
    ],
    "smoke": [
        "981c945e0a3793673e3fef42a982b3732569ac3f79d43721fd510134953982ae",
        "30e621008001b2984749f78e5ca4df2d4d84e2f549e3d3cfeb42a83352bbd000",
        "7eb46edf7ca22c20465a392f1ad1a9d015a5536b6e1ba19d04e0b0ae0c4e70cf",
        "8696c3e4e0b1a8519ee59e23b715a019169a1ab20c72122bfa9cc754a717a802",
    ],
}


@pytest.mark.parametrize("name", sorted(SPEC_FINGERPRINTS))
def test_preset_spec_fingerprint_is_pinned(name):
    assert fingerprint(load_spec(name).to_dict()) == SPEC_FINGERPRINTS[name]


@pytest.mark.parametrize("name", sorted(FIRST_MODEL_FINGERPRINTS))
def test_first_sampled_models_are_pinned(name):
    configs = sample_configs(load_spec(name), len(FIRST_MODEL_FINGERPRINTS[name]))
    # pinned with the training code version of the time; what is pinned is the config's part
    assert [config.fingerprint("weightzoo-train-1") for config in configs] == FIRST_MODEL_FINGERPRINTS[name]
