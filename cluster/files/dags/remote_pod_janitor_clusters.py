"""Deletes this project's orphaned pods on every added remote cluster, every hour.

The same sweep as dags/remote_pod_janitor.py (which keeps the primary cluster clean), one task
per cluster added under clusters/, each with that cluster's own client, namespace and
include/janitor.py: only pods of this project and this Airflow, older than the grace period,
whose task instance Airflow reports finished are deleted, and each deletion is logged. One
cluster that cannot be reached does not stop the others, and a cluster not set up yet (its
connection still the example written when it was added) logs that in one line and calls
nothing. Pause this DAG to keep a finished task's pod, e.g. to debug it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import BaseHook, dag, task
from clusters import cluster, names


def sweep(name: str, get_task_states) -> dict[str, int]:
    found = cluster(name)
    extra = BaseHook.get_connection(found.settings.CONNECTION_ID).extra_dejson
    # The task states come from Airflow's Task SDK (no metadata database access needed).
    return found.janitor.run(extra, found.api_client, found.settings.REMOTE_NAMESPACE, get_task_states)


@dag(
    dag_id="remote_pod_janitor_clusters",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # runs once deployed; pause it in the UI to keep pods
    tags=["remote-kpo", "janitor", "clusters"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    doc_md=__doc__,
)
def remote_pod_janitor_clusters():
    def janitor_task(name: str):
        @task(task_id=f"delete_orphan_pods_{cluster(name).key}", multiple_outputs=False,
              execution_timeout=timedelta(minutes=10))
        def delete_orphan_pods(**context) -> dict[str, int]:
            return sweep(name, context["ti"].get_task_states)

        return delete_orphan_pods()

    for name in names():
        if cluster(name).added:
            janitor_task(name)


remote_pod_janitor_clusters()
