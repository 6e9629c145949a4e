"""Shipped zoo specs: ``load_spec("demo")`` loads ``demo.yaml`` from this package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_SUFFIX = ".yaml"


def list_presets() -> list[str]:
    """Return the names of the shipped presets, sorted."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name[: -len(_SUFFIX)] for f in files if f.name.endswith(_SUFFIX))


def preset_path(name: str) -> Path:
    """Return the path of the preset ``name``; ``ValueError`` names the known presets."""
    if name not in list_presets():
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(list_presets())}")
    return Path(str(resources.files(__name__).joinpath(name + _SUFFIX)))
