"""What can be checked of docker/ without a Docker engine: the compose file's structure (the
compose spec's essentials), health checks everywhere, secrets only from the environment, and
the worker image's install steps against pyproject.toml. Fast; starts nothing."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
# the compose spec's top-level and (commonly used) service keys; anything else is a typo
TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "configs", "secrets", "include"}
SERVICE_KEYS = {"image", "build", "command", "entrypoint", "environment", "env_file", "ports", "volumes",
                "depends_on", "healthcheck", "deploy", "profiles", "restart", "networks", "working_dir",
                "user", "labels", "expose", "shm_size", "ulimits", "gpus", "container_name"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_compose_has_only_known_keys_and_consistent_references(compose):
    assert set(k for k in compose if not k.startswith("x-")) <= TOP_LEVEL
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in declared_volumes, f"{name}: undeclared volume {source}"
        for port in service.get("ports", []):
            assert re.fullmatch(r"(\d+:)?\d+(/(tcp|udp))?", str(port)), f"{name}: bad port {port!r}"
        for other, needs in (service.get("depends_on") or {}).items():
            assert other in compose["services"], f"{name}: depends on unknown service {other}"
            assert needs["condition"] in CONDITIONS, f"{name}: condition {needs['condition']!r}"
            if needs["condition"] == "service_healthy":
                assert "healthcheck" in compose["services"][other], f"{name} waits for {other}'s health check"


def test_every_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name}: no health check"
        test = check["test"]
        assert isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck.test {test!r}"


def test_the_stack_has_every_part_the_scale_out_needs(compose, pyproject):
    services = compose["services"]
    commands = {name: " ".join(map(str, s.get("command", []))) for name, s in services.items()}
    prefect_pin = next(Requirement(d) for d in pyproject["project"]["dependencies"] if d.startswith("prefect=="))
    server = services["prefect"]
    assert "prefect server start" in commands["prefect"]
    assert server["image"].startswith(f"prefecthq/prefect:{next(iter(prefect_pin.specifier)).version}-python3.11")
    assert server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert commands["scheduler"].startswith("dask scheduler")
    assert services["worker"]["deploy"]["replicas"] >= 2 and commands["worker"].startswith("dask worker")
    assert "--resources GPU=1" in commands["worker-gpu"], "the GPU worker must advertise the GPU resource"
    assert services["worker-gpu"]["build"]["args"]["TORCH_INDEX_URL"] == "https://pypi.org/simple"
    assert "--pool weightzoo" in commands["prefect-worker"]
    assert "minio" in services["s3"]["image"]


def test_secrets_come_from_the_environment(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), f"{name}.{key} is a literal secret"
            assert "change-me" not in str(value), f"{name}.{key}"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _pip_installs(instructions) -> list[list[str]]:
    """The arguments of every ``pip install`` in RUN steps (split at ``&&``)."""
    installs = []
    for keyword, arguments in instructions:
        for command in arguments.split("&&") if keyword == "RUN" else []:
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    return installs


def test_worker_image_installs_what_pyproject_pins(pyproject):
    instructions = _instructions(DOCKER / "Dockerfile.worker")
    installs = _pip_installs(instructions)
    pins = {Requirement(d).name: Requirement(d) for d in pyproject["project"]["dependencies"]}
    assert ["--no-cache-dir", "."] in installs, "the image must install the package itself from pyproject"
    extra = [Requirement(w) for args in installs for w in args if not w.startswith(("-", "$", ".")) and w != "."]
    assert extra, "torch is installed from its own index first"
    for requirement in extra:
        assert requirement.name in pins, f"Dockerfile installs {requirement.name}, which pyproject does not list"
        for spec in requirement.specifier:
            assert pins[requirement.name].specifier.contains(spec.version), \
                f"Dockerfile pins {requirement}, pyproject says {pins[requirement.name]}"
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG")
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu"), "the default image is the CPU one"


def test_worker_image_copies_files_that_exist_and_checks_health():
    instructions = _instructions(DOCKER / "Dockerfile.worker")
    for keyword, arguments in instructions:
        if keyword == "COPY":
            for source in arguments.split()[:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    assert instructions[0] == ("FROM", "python:3.11-slim")  # pyproject: requires-python 3.11
    assert any(k == "HEALTHCHECK" for k, _ in instructions)
