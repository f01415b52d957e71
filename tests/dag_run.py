"""Run one DAG of a rendered project with ``dag.test()`` and print its run and task states.

  python tests/dag_run.py <dags folder> <dag id> [logical date]

Started by tests/e2e_harness.py (``start_dag``) in an environment that sees only the image's
packages. With KPO_TEST_USE_EXECUTOR set, the tasks go through the configured executor
(LocalExecutor, with an execution API server and a triggerer: ``AirflowServices``), so that tasks
without dependencies, and their deferred pods, run at once as in a deployment.

One upstream race is closed here, and only here (the project ships nothing of it): Airflow 3.3.2
fails a deferred task whose trigger fired before the executor's SUCCESS event of the worker that
exited on ``defer()`` was processed, once ``dag.test()`` has already queued the resumed attempt
(state queued or running, not scheduled). It then takes that stale event for a task "killed
externally", fails the try, and the retry starts a second pod; or the run waits for a task that
stays queued (apache/airflow#67287, fixed for "queued" by #68741 after 3.3.2; #72716 for "running",
open). This is what made the multi-cluster run hang or start a second pod under load in CI.
``stale_defer_exits`` drops exactly those events before ``process_executor_events`` reads them,
as the upstream fixes do, and says so on stdout (``DAG_TEST_STALE_DEFER_EXIT``).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Run by path, Python put tests/ first on sys.path: the DAGs see only what the image holds.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

RESUMED_STATES = ("scheduled", "queued", "running")


def stale_defer_exits(events: Mapping[Any, tuple[Any, Any]], current: Callable[[Any], Any]) -> list:
    """The keys of ``events`` (executor event buffer: key -> (state, info)) that are the SUCCESS of a
    worker that exited on defer() while the same try has since resumed: its task instance
    (``current(key)``) is scheduled, queued or running again with ``next_method`` set."""
    stale = []
    for key, (state, _info) in events.items():
        if str(state) != "success" or not hasattr(key, "try_number"):
            continue
        ti = current(key)
        if (ti is not None and ti.try_number == key.try_number and ti.next_method is not None
                and str(ti.state) in RESUMED_STATES):
            stale.append(key)
    return stale


def guard_stale_defer_exits() -> None:
    """Make dag.test()'s ``process_executor_events`` skip stale defer-exit events (see above)."""
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    original = SchedulerJobRunner.process_executor_events.__func__

    def process_executor_events(cls, executor, job_id, scheduler_dag_bag, session):
        def current(key):
            return session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
                TaskInstance.run_id == key.run_id, TaskInstance.map_index == key.map_index)).one_or_none()

        for key in stale_defer_exits(executor.event_buffer, current):
            print("DAG_TEST_STALE_DEFER_EXIT", key.task_id, key.try_number, flush=True)
            del executor.event_buffer[key]
        return original(cls, executor, job_id, scheduler_dag_bag, session)

    SchedulerJobRunner.process_executor_events = classmethod(process_executor_events)


def main(folder: str, dag_id: str, logical_date: str | None = None) -> int:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(folder)
    if bag.import_errors:
        raise AssertionError(bag.import_errors)
    when = dt.datetime.fromisoformat(logical_date) if logical_date else None
    # Airflow 3 names manual runs after run_after: pin both to rerun the very same run.
    kwargs = {"logical_date": when, "run_after": when} if when else {}
    use_executor = bool(os.environ.get("KPO_TEST_USE_EXECUTOR"))
    if use_executor:
        guard_stale_defer_exits()
    run = bag.get_dag(dag_id).test(use_executor=use_executor, **kwargs)
    print("DAG_RUN_ID", run.run_id)
    for ti in run.get_task_instances():
        print("TASK_STATE", ti.task_id, ti.state)
    print("DAG_RUN_STATE", run.state)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
