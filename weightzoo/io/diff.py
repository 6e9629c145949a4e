"""What changed between two versions of a zoo: models added, removed and changed.

Models are matched by ``model_id``. A model present in both versions is **changed** when
any of its models-table columns differs (fingerprint, status, message, split, row,
hyperparameters, ...; a column one version lacks counts as null) or any of its
snapshots-table rows differs (a snapshot k present in one version only is reported as
``snapshots.k``, a differing metric as ``snapshots.<metric>``). Values are compared
exactly, with null equal to null (NaN included), since both sides are stored values, not
recomputed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

SNAPSHOT_KEY = ["model_id", "k"]


@dataclass(frozen=True)
class VersionDiff:
    """The difference between version ``a`` (older) and version ``b``."""

    version_a: str
    version_b: str
    added: list[str]
    removed: list[str]
    changed: dict[str, list[str]] = field(default_factory=dict)  # model_id → changed fields
    n_unchanged: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-able values, with counts."""
        return {"version_a": self.version_a, "version_b": self.version_b,
                "counts": {"added": len(self.added), "removed": len(self.removed),
                           "changed": len(self.changed), "unchanged": self.n_unchanged},
                "added": self.added, "removed": self.removed, "changed": self.changed}


def diff_tables(models_a: pd.DataFrame, snapshots_a: pd.DataFrame, models_b: pd.DataFrame,
                snapshots_b: pd.DataFrame, *, version_a: str = "a", version_b: str = "b") -> VersionDiff:
    """Compare two versions' models and snapshots tables (see the module docstring)."""
    ids_a, ids_b = set(models_a["model_id"]), set(models_b["model_id"])
    common = sorted(ids_a & ids_b)
    changed: dict[str, list[str]] = {model_id: [] for model_id in common}
    for model_id, column in _changed_model_columns(models_a, models_b, common):
        changed[model_id].append(column)
    for model_id, column in _changed_snapshot_columns(snapshots_a, snapshots_b, set(common)):
        changed[model_id].append(f"snapshots.{column}")
    changed = {model_id: fields for model_id, fields in changed.items() if fields}
    return VersionDiff(version_a, version_b, added=sorted(ids_b - ids_a), removed=sorted(ids_a - ids_b),
                       changed=changed, n_unchanged=len(common) - len(changed))


def diff_versions(zoo, version_a: str, version_b: str) -> VersionDiff:
    """Compare two published versions of ``zoo`` (a ZooHandle); VersionNotFound names a missing one."""
    zoo_a, zoo_b = zoo.open(version_a), zoo.open(version_b)
    return diff_tables(zoo_a.models, zoo_a.snapshots, zoo_b.models, zoo_b.snapshots,
                       version_a=version_a, version_b=version_b)


def _changed_model_columns(models_a, models_b, common: list[str]):
    """(model_id, column) for every differing models-table cell of the common models."""
    left = models_a.set_index("model_id").loc[common]
    right = models_b.set_index("model_id").loc[common]
    columns = list(dict.fromkeys([*left.columns, *right.columns]))
    for column in columns:
        differs = ~_same(_column(left, column), _column(right, column))
        for model_id in differs.index[differs.to_numpy()]:
            yield model_id, column


def _changed_snapshot_columns(snapshots_a, snapshots_b, common: set[str]):
    """(model_id, column) for snapshot rows of the common models that differ or exist on one side."""
    left = snapshots_a[snapshots_a["model_id"].isin(common)]
    right = snapshots_b[snapshots_b["model_id"].isin(common)]
    merged = left.merge(right, on=SNAPSHOT_KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    one_sided = merged.loc[merged["_merge"] != "both", "model_id"]
    for model_id in dict.fromkeys(one_sided):
        yield model_id, "k"
    both = merged[merged["_merge"] == "both"]
    metrics = [c for c in dict.fromkeys([*left.columns, *right.columns]) if c not in SNAPSHOT_KEY]
    for column in metrics:
        differs = ~_same(_column(both, f"{column}_a"), _column(both, f"{column}_b"))
        for model_id in dict.fromkeys(both.loc[differs.to_numpy(), "model_id"]):
            yield model_id, column


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype="object")


def _same(left: pd.Series, right: pd.Series) -> pd.Series:
    """Element-wise equality with null == null (numbers compare by value: 3 == 3.0)."""
    null_left, null_right = left.isna().to_numpy(), right.isna().to_numpy()
    present = ~(null_left | null_right)
    same = null_left & null_right
    same[present] = left.to_numpy(dtype=object)[present] == right.to_numpy(dtype=object)[present]
    return pd.Series(same, index=left.index)
