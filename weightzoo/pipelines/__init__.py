"""Plan → stage → publish, without Prefect: build, import, regenerate, pull.

Each pipeline has a plan (a typed value made once, by the CLI or a flow's entry), steps
(plain functions that stage their outputs and return small receipts) and a recipe that
runs the steps on a :class:`~weightzoo.pipelines.runner.Runner` — in this process
(:class:`~weightzoo.pipelines.runner.InProcessRunner`) or as Prefect tasks on Dask (the
runner in ``weightzoo_flows.runtime``). Every pipeline ends in the one publish,
:func:`weightzoo.io.publish.publish_version`.
"""
