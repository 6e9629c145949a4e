"""What a version needs to be made again: code revision, package versions, training settings.

Training runs in Dask worker processes and publishing in another, so the settings that shape
the numbers (torch threads, deterministic algorithms, cuDNN flags, device) are captured by
:func:`training_environment` *in the training process* and stored in each staged model's
record; the publisher summarises those records (:func:`training_summary`) next to its own
:func:`publish_environment`. A fleet's composition is recorded too: with dropout or
augmentation, a member's random streams depend on which models trained with it, in which order.

Manifest fields written from here (all optional for readers: older manifests lack them)::

    "code": {"weightzoo": str, "code_version": str, "kind": "git" | "package",
               "git_commit": str | null, "git_dirty": bool | null},
    "environment": {"publish": {python, implementation, platform, machine, cpu_count},
                    "training": [{...training_environment(), "n_models": int}, ...],
                    "models_without_environment": int},
    "fleets": [{"trainer": "fleet" | "single", "models": [model_id, ...],
                "environment": index into environment.training | null}, ...]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import weightzoo
from weightzoo.core.fingerprint import CODE_VERSION

# packages whose versions can change a trained weight or how it is stored
PACKAGES = ("torch", "numpy", "scikit-learn", "mlxtend", "zarr", "icechunk", "pyarrow", "pandas", "numcodecs")
GIT_TIMEOUT_SECONDS = 10


def package_versions() -> dict:
    """Python's and the number-shaping packages' installed versions (None if not installed)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}}


@lru_cache(maxsize=1)
def source_revision() -> dict:
    """The code that runs: the git commit (and whether the package's files differ from it) when
    weightzoo is imported from a git checkout, else the installed package version."""
    package_dir = Path(weightzoo.__file__).resolve().parent
    result = {"weightzoo": weightzoo.__version__, "code_version": CODE_VERSION, "kind": "package",
              "git_commit": None, "git_dirty": None}
    commit = _git(package_dir, "rev-parse", "HEAD")
    if commit is None:
        return result
    # only the code counts as dirty: zoos or notes written inside the checkout do not
    paths = [str(package_dir)] + [str(p) for p in [package_dir.parent / "flows"] if p.is_dir()]
    status = _git(package_dir, "status", "--porcelain", "--", *paths)
    return dict(result, kind="git", git_commit=commit, git_dirty=None if status is None else bool(status))


def _git(cwd: Path, *args: str) -> str | None:
    # --no-optional-locks: a status must never write the index of the user's checkout
    try:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def training_environment(device: str = "cpu") -> dict:
    """The settings in force in *this* process that decide a trained model's exact bits."""
    import torch  # here, not at import: the catalog commands never train

    env = {
        "device": str(device),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "code": source_revision(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(torch.device(device)),
                   cudnn=torch.backends.cudnn.version(), cudnn_enabled=torch.backends.cudnn.enabled,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return env


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def training_settings(env: dict | None):
    """Apply a recorded environment's thread count and deterministic and cuDNN flags; restore on exit.

    Missing keys (records of older code) leave the current setting alone.
    """
    import torch  # here, not at import: the catalog commands never train

    env, cudnn = env or {}, torch.backends.cudnn
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.benchmark, cudnn.deterministic)
    try:
        if env.get("torch_threads"):
            torch.set_num_threads(int(env["torch_threads"]))
        if "deterministic_algorithms" in env:
            torch.use_deterministic_algorithms(bool(env["deterministic_algorithms"]),
                                               warn_only=bool(env.get("deterministic_warn_only")))
        cudnn.benchmark = bool(env.get("cudnn_benchmark", cudnn.benchmark))
        cudnn.deterministic = bool(env.get("cudnn_deterministic", cudnn.deterministic))
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
        cudnn.benchmark, cudnn.deterministic = previous[3], previous[4]


def publish_environment() -> dict:
    """The publishing process's platform (the training settings come from the records)."""
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}


class TrainingSummary:
    """The manifest's ``environment`` and ``fleets``, and the producers' code versions, from the
    new models' staged records, added one at a time (a publish streams them)."""

    def __init__(self) -> None:
        self.environments: dict[str, dict] = {}
        self.fleets: dict[tuple, dict] = {}
        self.producers: set[str] = set()

    def add(self, record) -> None:
        """Count one staged record's environment and fleet."""
        env, index = record.environment, None
        if env is not None:
            key = json.dumps(env, sort_keys=True, default=str)
            self.environments.setdefault(key, dict(env, n_models=0))["n_models"] += 1
            index = list(self.environments).index(key)
        if record.fleet is not None:
            # a fleet trained in one process: its members share one environment
            self.fleets.setdefault(tuple(record.fleet["models"]), {
                "trainer": record.fleet["trainer"], "models": list(record.fleet["models"]), "environment": index})
        if record.code_version:
            self.producers.add(record.code_version)

    def result(self, n_models: int) -> dict:
        """The manifest fields: distinct training environments (with counts), fleets in training order."""
        with_env = sum(e["n_models"] for e in self.environments.values())
        return {"environment": {"publish": publish_environment(), "training": list(self.environments.values()),
                                "models_without_environment": n_models - with_env},
                "fleets": list(self.fleets.values())}


def training_summary(records: list, n_models: int) -> dict:
    """:class:`TrainingSummary` of a list of staged records."""
    summary = TrainingSummary()
    for record in records:
        summary.add(record)
    return summary.result(n_models)
