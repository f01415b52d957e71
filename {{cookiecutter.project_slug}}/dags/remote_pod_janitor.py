"""Deletes this project's orphaned pods on the remote cluster, every hour.

An orphan is a pod whose task has finished but which is still there, because its worker died
before it could delete it and no retry came back for it. Only pods in the project's
namespace that carry this project's labels, are older than the grace period (30 minutes,
``GRACE_PERIOD`` in include/janitor.py) and whose task instance Airflow reports finished are
deleted; a pod of a queued, running, deferred or retrying task is never touched. Each
deletion is logged with the pod's dag_id, task_id, run_id, age and task state. Uses only the
Role's list and delete on pods. Pause this DAG to keep a finished task's pod, e.g. to debug it.
Until the remote cluster is set up (the connection still the example written at render time)
each run logs that in one line and succeeds without calling anything.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import BaseHook, dag, task

from include import janitor
from include.kube_client import api_client
from include.remote_cluster import CONNECTION_ID, REMOTE_NAMESPACE


@dag(
    dag_id="remote_pod_janitor",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # runs once deployed; pause it in the UI to keep pods
    tags=["remote-kpo", "janitor"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    doc_md=__doc__,
)
def remote_pod_janitor():
    @task(multiple_outputs=False, execution_timeout=timedelta(minutes=10))
    def delete_orphan_pods(**context) -> dict[str, int]:
        # The task states come from Airflow's Task SDK (no metadata database access needed).
        extra = BaseHook.get_connection(CONNECTION_ID).extra_dejson
        return janitor.run(extra, api_client, REMOTE_NAMESPACE, context["ti"].get_task_states)

    delete_orphan_pods()


remote_pod_janitor()
