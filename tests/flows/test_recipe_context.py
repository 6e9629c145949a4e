"""A recipe flow's run context carries its parameters' summaries, not the values: Prefect sends
that context with every task it submits, and Dask tokenizes and pickles it each time."""

import cloudpickle


class Big:
    """A parameter like a build plan: large, with a short summary."""

    def __init__(self) -> None:
        self.values = list(range(200_000))

    def summary(self) -> str:
        return "big: 200000 values"


def test_a_task_context_holds_the_summary_not_the_plan(prefect_api):
    from prefect.context import serialize_context

    from weightzoo_flows.runtime import recipe_flow

    @recipe_flow(name="context-size")
    def carrying(big: Big, n: int) -> tuple[int, int, bytes]:
        return len(big.values), n, cloudpickle.dumps(serialize_context())  # what prefect-dask sends per task

    size, n, context = carrying(Big(), 3)
    assert (size, n) == (200_000, 3)  # the function itself gets the values
    assert b"big: 200000 values" in context
    assert len(context) < 100_000, f"the task context is {len(context):,} bytes"  # the plan itself: > 1 MB
