"""Preflight for the remote cluster: run it once after setup and after any change.

Step by step it proves that the connection is filled in, that the credentials produce a
token, that the API server answers and accepts that token, and that the identity may make
every call the remote_kpo DAG makes. The first failing step names what is missing and how
to fix it; the last task prints the whole report.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.sdk import BaseHook, dag, task
from airflow.sdk.exceptions import AirflowFailException

from include import preflight
from include.remote_cluster import CLUSTER_NAME, KUBERNETES_CONN_ID


def step(check, *args) -> str:
    """Run one check; a failure is final (retrying a missing permission cannot help)."""
    try:
        finding = check(*args)
    except preflight.PreflightError as err:
        raise AirflowFailException(str(err)) from None
    print(f"OK: {finding}")
    return finding


def connection_extra() -> dict:
    return BaseHook.get_connection(KUBERNETES_CONN_ID).extra_dejson


def api_client():
    return KubernetesHook(conn_id=KUBERNETES_CONN_ID, in_cluster=False).api_client


@dag(
    dag_id="check_remote_cluster",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["remote-kpo", "preflight"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=15)},
    doc_md=__doc__,
)
def check_remote_cluster():
    @task
    def connection() -> str:
        return step(preflight.check_connection, connection_extra())

    @task
    def credentials() -> str:
        return step(preflight.check_credentials, connection_extra())

    @task
    def api_server() -> str:
        return step(preflight.check_api_server, api_client())

    @task
    def permissions() -> str:
        return step(preflight.check_permissions, api_client())

    @task
    def report(*findings: str) -> None:
        names = ("connection", "credentials", "api server", "permissions")
        print(f"Remote cluster {CLUSTER_NAME} via connection {KUBERNETES_CONN_ID}: ready")
        for name, finding in zip(names, findings, strict=True):
            print(f"  [ok] {name:<12} {finding}")

    steps = [connection(), credentials(), api_server(), permissions()]
    for before, after in zip(steps, steps[1:], strict=False):
        before >> after
    report(*steps)


check_remote_cluster()
