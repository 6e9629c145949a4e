"""Which snapshots k of each model a reader takes: one grammar for every command and the Python API.

Text forms (``--snapshots`` of every command, :meth:`SnapshotChoice.parse`):

=========  ==========================================================
``all``    every snapshot of each model (the default)
``last``   each model's last snapshot
``K``      snapshot K
``A:B``    snapshots A, A+1, ..., B-1 (B exclusive)
``A:``     snapshots A, A+1, ... up to each model's last
``:B``     snapshots 0, ..., B-1
``0,2,4``  exactly these (sorted, without repeats)
=========  ==========================================================

From Python, :meth:`SnapshotChoice.of` also takes None (all), an int, a ``range``, a ``slice``
(step ≥ 1), a list of ints or a SnapshotChoice.

Resolving a choice against one model (:meth:`SnapshotChoice.resolve`) has one rule: every k
the choice names must exist for that model, otherwise an InputError names the model and its
k range — nothing shrinks silently. Only the open-ended forms (``all``, ``last``, ``A:``)
adapt to each model's number of snapshots (``A:`` still needs snapshot A).

The canonical text (:attr:`SnapshotChoice.text`, also ``str(choice)``) is the JSON form kept in
cache parameters and manifests; ``parse(choice.text) == choice``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from weightzoo.errors import InputError, UsageError

_RANGE = re.compile(r"^(\d*):(\d*)$")
_LIST = re.compile(r"^\d+(,\d+)*$")


@dataclass(frozen=True)
class SnapshotChoice:
    """A choice of snapshot indices, resolved per model (see the module docstring).

    ``kind`` is ``"range"`` (``start`` to ``stop``, exclusive; ``stop`` None: to each model's
    end), ``"list"`` (``ks``) or ``"last"``.
    """

    kind: str = "range"
    start: int = 0
    stop: int | None = None
    ks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("range", "list", "last"):
            raise UsageError(f"snapshot choice kind must be range, list or last; got {self.kind!r}")
        if self.kind == "range" and (self.start < 0 or (self.stop is not None and self.stop <= self.start)):
            raise UsageError(f"snapshots {self.start}:{'' if self.stop is None else self.stop}: a range A:B "
                             f"needs 0 <= A < B (B exclusive)")
        if self.kind == "list" and (not self.ks or list(self.ks) != sorted(set(self.ks)) or self.ks[0] < 0):
            raise UsageError(f"snapshots {list(self.ks)}: a list needs distinct k >= 0 in ascending order")

    @classmethod
    def parse(cls, text: str) -> "SnapshotChoice":
        """The choice written as ``text`` (see the module docstring); UsageError names the text."""
        value = str(text).strip().replace(" ", "")
        if value in ("all", ""):
            return ALL
        if value == "last":
            return LAST
        match = _RANGE.match(value)
        if match:
            start, stop = match.groups()
            if start and stop and int(stop) <= int(start):
                raise UsageError(f"snapshots {text!r}: a range A:B needs 0 <= A < B (B exclusive)")
            return cls("range", int(start or 0), int(stop) if stop else None)
        if _LIST.match(value):
            return cls.of([int(k) for k in value.split(",")])
        raise UsageError(f"snapshots {text!r}: expected all, last, K, A:B (B exclusive), A:, :B or a list "
                         f"such as 0,2,4 (k counts from 0)")

    @classmethod
    def of(cls, value) -> "SnapshotChoice":
        """The choice ``value`` stands for: None (all), a SnapshotChoice, text, an int, a range,
        a slice or a list of ints. Negative k are refused (use ``last``)."""
        if value is None:
            return ALL
        if isinstance(value, SnapshotChoice):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, slice):
            return _from_slice(value)
        if isinstance(value, range) and value.step == 1 and len(value):
            _check_not_negative(value.start, value)
            return cls("range", value.start, value.stop)
        if isinstance(value, (bool, np.bool_)):
            raise UsageError(f"snapshots {value!r}: expected k, a range or a list of k, not a boolean")
        values = np.asarray(value).ravel().tolist()  # plain Python ints (and anything else, refused below)
        if not values:
            raise UsageError(f"snapshots {value!r} name no snapshot")
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in values):
            raise UsageError(f"snapshots {value!r}: expected integer k")
        for k in values:
            _check_not_negative(k, value)
        return cls("list", ks=tuple(sorted(set(values))))

    @property
    def text(self) -> str:
        """The canonical text: the form of the module docstring that ``parse`` reads back."""
        if self.kind == "last":
            return "last"
        if self.kind == "list":
            return ",".join(str(k) for k in self.ks)
        if self.stop is None:
            return "all" if self.start == 0 else f"{self.start}:"
        return f"{self.start}:{self.stop}"

    def __str__(self) -> str:
        return self.text

    @property
    def open_ended(self) -> bool:
        """Whether the choice adapts to each model's length (``all``, ``last``, ``A:``)."""
        return self.kind == "last" or (self.kind == "range" and self.stop is None)

    def resolve(self, n_snapshots: int, model: str = "the model") -> np.ndarray:
        """The snapshot indices (int64, ascending) of a model with ``n_snapshots`` snapshots.

        InputError, naming ``model`` and its k range, when the choice asks for a k it lacks.
        """
        n = int(n_snapshots)
        if self.kind == "last":
            wanted = np.arange(n - 1, n) if n else None
        elif self.kind == "list":
            wanted = np.asarray(self.ks, dtype=np.int64)
        else:
            wanted = np.arange(self.start, n if self.stop is None else self.stop, dtype=np.int64)
        if wanted is None or (self.kind == "range" and self.start >= n):
            raise InputError(f"snapshots {self.text!r} ask for k={self.start if self.kind == 'range' else 'last'} "
                             f"but model {model!r} has n_snapshots={n}{_k_range(n)}")
        missing = wanted[wanted >= n]
        if missing.size:
            raise InputError(f"snapshots {self.text!r} ask for k={int(missing[0])} but model {model!r} has "
                             f"n_snapshots={n}{_k_range(n)}")
        return wanted.astype(np.int64)

    def resolve_ks(self, stored, model: str = "the model") -> np.ndarray:
        """The k (int64, ascending) this choice takes from a model whose stored snapshots have
        the k values ``stored`` (ascending; a pulled slice keeps its original k, e.g. 1, 2).

        For ``stored`` = 0..n-1 this is :meth:`resolve`. Otherwise ``all`` takes every stored k,
        ``last`` the last one, ``A:`` every stored k ≥ A (A must be stored), and every k that
        ``A:B``, ``:B``, ``K`` or a list names must be stored: InputError names the model and
        its k values.
        """
        stored = np.asarray(stored, dtype=np.int64)
        n = stored.size
        if n == 0 or (stored[0] == 0 and stored[-1] == n - 1):
            return self.resolve(n, model)
        if self == ALL:
            return stored.copy()
        if self.kind == "last":
            return stored[-1:].copy()
        if self.kind == "list":
            wanted = np.asarray(self.ks, dtype=np.int64)
        elif self.stop is None:
            wanted = np.concatenate([[self.start], stored[stored > self.start]]).astype(np.int64)
        else:
            wanted = np.arange(self.start, self.stop, dtype=np.int64)
        missing = np.setdiff1d(wanted, stored)
        if missing.size:
            raise InputError(f"snapshots {self.text!r} ask for k={int(missing[0])} but model {model!r} has "
                             f"snapshots k = {','.join(str(int(k)) for k in stored)} (a slice keeps its "
                             f"original k)")
        return wanted


ALL = SnapshotChoice("range", 0, None)
LAST = SnapshotChoice("last")


def _from_slice(value: slice) -> SnapshotChoice:
    step = 1 if value.step is None else value.step
    start = 0 if value.start is None else value.start
    for end in (start, value.stop):
        if end is not None:
            _check_not_negative(end, value)
    if step < 1:
        raise UsageError(f"snapshots {value!r}: the step must be >= 1")
    if step == 1:
        return SnapshotChoice.parse(f"{start}:{'' if value.stop is None else value.stop}")
    if value.stop is None:
        raise UsageError(f"snapshots {value!r}: a slice with a step needs an end (e.g. slice(0, 10, 2))")
    return SnapshotChoice.of(list(range(start, value.stop, step)))


def _check_not_negative(k: int, value) -> None:
    if k < 0:
        raise UsageError(f"snapshots {value!r}: k={k} is negative; snapshot indices count from 0 "
                         f"(use 'last' for each model's last snapshot)")


def _k_range(n: int) -> str:
    return f" (k = 0..{n - 1})" if n else " (no snapshots)"
