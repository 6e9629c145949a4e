"""Dense training traces: which tensors to record (``training.traces``) and what was recorded.

Spec syntax (JSON Schema: ``training.traces``)::

    training:
      traces: {tensors: ["1.bias"], every: 1}

``tensors`` are tensor names of the model's :class:`~weightzoo.core.layout.WeightLayout`
(its state-dict names: for an ``mlp`` index 0 is the Flatten, so ``1.weight``/``1.bias`` are
the first linear layer). ``every`` records after every N-th optimisation step (default 1).
Without ``traces`` (or with the legacy ``traces: []``) nothing is recorded and the training
settings' canonical form has no ``traces`` key, so untraced fingerprints stay as they were.

A :class:`Trace` holds one model's recording: point 0 is the initial value (step 0, epoch 0,
learning rate and loss NaN); point i > 0 is the value right *after* optimisation step
``step[i]``, taken in epoch ``epoch[i]`` (1-based) with learning rate ``lr[i]``, and
``loss[i]`` is that step's training loss (mean over its batch, before the update).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from weightzoo.core.spec import SpecError

TRACE_COLUMNS = ("step", "epoch", "lr", "loss")


@dataclass(frozen=True)
class TraceSettings:
    """Which layout tensors to record, after every ``every``-th optimisation step."""

    tensors: tuple[str, ...]
    every: int = 1

    def to_dict(self) -> dict:
        """The canonical spec form."""
        return {"tensors": list(self.tensors), "every": self.every}

    @classmethod
    def from_spec(cls, value) -> TraceSettings | None:
        """Settings from a schema-validated ``training.traces`` value (None when off)."""
        if not value:  # absent, or the legacy empty list
            return None
        return cls(tensors=tuple(value["tensors"]), every=int(value.get("every", 1)))

    def unknown_tensors(self, layout) -> list[str]:
        """The requested names that ``layout`` does not have, in spec order."""
        known = {t.name for t in layout.tensors}
        return [name for name in self.tensors if name not in known]


def check_trace_tensors(settings: TraceSettings | None, layout, architecture: str = "") -> None:
    """Raise SpecError naming ``training.traces.tensors[i]`` for a tensor ``layout`` lacks,
    with the layout's tensor names. Called when a model is planned and again before it
    trains, so nothing is staged for a spec whose traces cannot be recorded."""
    if settings is None:
        return
    known = [t.name for t in layout.tensors]
    for name in settings.unknown_tensors(layout):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        owner = f"architecture {architecture!r}, " if architecture else ""
        raise SpecError(f"training.traces.tensors[{settings.tensors.index(name)}]",
                        f"unknown tensor {name!r} for {owner}layout {layout.layout_id}{hint} "
                        f"(known tensors: {', '.join(known)})")


@dataclass
class Trace:
    """One model's recorded trajectory (see the module docstring for the row semantics)."""

    tensors: dict[str, np.ndarray]  # name -> float32 [n_points, size] (the tensor flattened)
    step: np.ndarray  # int64 [n_points]
    epoch: np.ndarray  # int64 [n_points]
    lr: np.ndarray  # float64 [n_points]
    loss: np.ndarray  # float64 [n_points]
    steps_per_epoch: int = 0
    every: int = 1

    @property
    def n_points(self) -> int:
        """Number of recorded points (the initial one included)."""
        return int(len(self.step))

    def check(self) -> None:
        """Raise ValueError unless every column and tensor has one row per point."""
        n = self.n_points
        for name in TRACE_COLUMNS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"trace column {name!r} has {len(getattr(self, name))} rows; step has {n}")
        for name, values in self.tensors.items():
            if values.ndim != 2 or values.shape[0] != n:
                raise ValueError(f"traced tensor {name!r} has shape {values.shape}; expected [{n}, size]")
