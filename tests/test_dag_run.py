"""tests/dag_run.py drops exactly the stale defer-exit events of Airflow 3.3.2's dag.test() race
(see its docstring): a SUCCESS of the same try whose task instance has resumed (scheduled, queued
or running again, next_method set), and nothing else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import pytest
from dag_run import stale_defer_exits


class Key(NamedTuple):  # the shape of airflow.models.taskinstancekey.TaskInstanceKey
    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    map_index: int = -1


KEY = Key("d", "hello", "r")


def ti(state: str, try_number: int = 1, next_method: str | None = "trigger_reentry") -> SimpleNamespace:
    return SimpleNamespace(state=state, try_number=try_number, next_method=next_method)


@pytest.mark.parametrize("state", ["scheduled", "queued", "running"])
def test_a_success_of_the_deferring_worker_after_the_resume_is_stale(state):
    assert stale_defer_exits({KEY: ("success", None)}, lambda key: ti(state)) == [KEY]


@pytest.mark.parametrize("event, current", [
    pytest.param("failed", ti("queued"), id="a failure is never stale"),
    pytest.param("success", ti("deferred"), id="still deferred: the ordinary defer exit"),
    pytest.param("success", ti("success", next_method=None), id="the resumed attempt finished"),
    pytest.param("success", ti("queued", next_method=None), id="queued without a deferral: killed externally"),
    pytest.param("success", ti("running", next_method=None), id="running without a deferral"),
    pytest.param("success", ti("queued", try_number=2), id="another try"),
    pytest.param("success", None, id="no such task instance"),
])
def test_every_other_event_is_left_to_airflow(event, current):
    assert stale_defer_exits({KEY: (event, None)}, lambda key: current) == []


def test_events_of_other_kinds_are_left_alone():
    callback_key = "0190-callback-id"  # callbacks' and connection tests' keys have no try_number
    assert stale_defer_exits({callback_key: ("success", None)}, lambda key: ti("queued")) == []
