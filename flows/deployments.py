"""Prefect deployments of the build, analysis and SANE flows.

Two ways to run them, both against a Prefect server:

- ``weightzoo serve`` (:func:`serve_deployments`): one long-running process registers the
  deployments and runs each triggered flow run itself (a subprocess per run);
- ``prefect deploy --all`` with the repository's ``prefect.yaml``: the same entrypoints
  registered to the ``weightzoo`` work pool, run by ``prefect worker start --pool weightzoo``.

Each deployed flow is a thin entry flow, the boundary where a run's text parameters become
a zoo handle and a plan; it runs the real flow on a Dask task runner
(``weightzoo_flows.runtime.run_on_dask``): an existing cluster when ``dask_address`` (or the
``WEIGHTZOO_DASK_ADDRESS`` environment variable of the serving process) names one, otherwise
a LocalCluster of ``workers`` processes. The address is read per run, so one deployment
serves whatever cluster its environment points to.
"""

from __future__ import annotations

import os

from prefect import flow, serve

from weightzoo.io.handle import ZooHandle
from weightzoo.pipelines.build import DEFAULT_GROUP_SIZE, plan_build

from weightzoo_flows.build_zoo import run_build_flow
from weightzoo_flows.compare import compare_flow
from weightzoo_flows.geometry import reinit_flow, study_flow
from weightzoo_flows.meta_classifier import meta_classifier_flow
from weightzoo_flows.properties import properties_flow
from weightzoo_flows.runtime import run_on_dask
from weightzoo_flows.sane import sane_flow

DASK_ADDRESS_ENV = "WEIGHTZOO_DASK_ADDRESS"
WORK_POOL = "weightzoo"
TAGS = ["weightzoo"]
# analysis name -> flow; the names are the ``analysis`` parameter of the analysis deployment
ANALYSES = {"meta-classifier": meta_classifier_flow, "properties": properties_flow, "study": study_flow,
            "reinit": reinit_flow, "compare": compare_flow}


def cluster_address(dask_address: str | None) -> str | None:
    """The run's Dask scheduler: the parameter, else ``$WEIGHTZOO_DASK_ADDRESS``, else None (local)."""
    return dask_address or os.environ.get(DASK_ADDRESS_ENV) or None


@flow(name="weightzoo-build")
def build(spec: str | dict = "smoke", out: str = "zoo", models: int | None = None, extend: bool = False,
          workers: int = 2, dask_address: str | None = None, max_group: int = DEFAULT_GROUP_SIZE) -> str:
    """Build (or extend) the zoo at ``out`` from a preset name, spec file or spec dict; returns
    the published version. ``out`` is a path on the machine that runs the flow (a shared volume)
    or an ``s3://`` URL."""
    plan = plan_build(ZooHandle.at(out), spec, models, max_group=max_group, min_groups=workers, extend=extend)
    return run_build_flow(plan, workers=workers, dask_address=cluster_address(dask_address)).version


@flow(name="weightzoo-analysis")
def analysis(analysis: str, parameters: dict, workers: int = 2, dask_address: str | None = None):
    """Run one analysis flow (``meta-classifier``, ``properties``, ``study``, ``reinit``, ``compare``) with
    its own ``parameters`` (those of the flow, e.g. ``zoo``, ``version``, ``labels``)."""
    if analysis not in ANALYSES:
        raise ValueError(f"analysis: unknown analysis {analysis!r}; known: {sorted(ANALYSES)}")
    return run_on_dask(ANALYSES[analysis], parameters, workers=workers, dask_address=cluster_address(dask_address))


@flow(name="weightzoo-sane")
def sane(zoo: str, command: str = "train", version: str | None = None, options: dict | None = None,
         targets: list[str] | None = None, sampling: dict | None = None, workers: int = 1,
         dask_address: str | None = None) -> dict:
    """SANE on a zoo version: ``train``, ``embed``, ``probe`` or ``sample`` (see ``weightzoo_flows.sane``)."""
    parameters = {"zoo": zoo, "command": command, "version": version, "options": options,
                  "targets": targets, "sampling": sampling}
    return run_on_dask(sane_flow, parameters, workers=workers, dask_address=cluster_address(dask_address))


def deployments(dask_address: str | None = None) -> list:
    """The three deployments ``weightzoo serve`` registers (names ``<flow>/<deployment>``:
    ``weightzoo-build/build``, ``weightzoo-analysis/analysis``, ``weightzoo-sane/sane``).

    ``dask_address`` becomes every deployment's default cluster; a run may still pass its own.
    """
    defaults = {"dask_address": dask_address} if dask_address else {}
    return [entry.to_deployment(name=name, tags=TAGS, parameters=dict(defaults))
            for name, entry in (("build", build), ("analysis", analysis), ("sane", sane))]


def serve_deployments(dask_address: str | None = None, limit: int | None = None) -> None:
    """Register the deployments and run their flow runs in this process until interrupted.

    ``limit`` caps concurrent flow runs (each may start its own LocalCluster).
    """
    serve(*deployments(dask_address), limit=limit, print_starting_message=False)
