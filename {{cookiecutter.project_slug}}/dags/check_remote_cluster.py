"""Preflight for the remote cluster: run it once after setup and after any change.

Step by step it proves that the connection is filled in, that the credentials produce a
token, that the API server answers and accepts that token, and that the identity may make
every call the remote_kpo DAG makes, and reports the namespace's quota use (failing when
remote_kpo's pod would not fit). The first failing step names what is missing and how
to fix it; the last task prints the whole report. A step that passes but needs action soon
(a ServiceAccount token under a quarter of its lifetime, a missing quota) logs a warning and
the run succeeds.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import BaseHook, dag, task
from airflow.sdk.exceptions import AirflowFailException

from include import preflight
from include.kube_client import api_client
{%- if cookiecutter.pod_operator == "native" and cookiecutter.cloud == "aws" %}
from include.remote_cluster import AWS_REGION, CLUSTER_NAME, CONNECTION_ID
{%- else %}
from include.remote_cluster import CLUSTER_NAME, CONNECTION_ID
{%- endif %}


log = logging.getLogger(__name__)
WARNING = "WARNING: "


def step(check, *args) -> str:
    """Run one check; a failure is final (retrying a missing permission cannot help), a finding
    that needs attention is logged as a warning and marked so in the report."""
    try:
        finding = check(*args)
    except preflight.PreflightError as err:
        raise AirflowFailException(str(err)) from None
    if isinstance(finding, preflight.Attention):
        log.warning("%s", finding)
        return f"{WARNING}{finding}"
    print(f"OK: {finding}")
    return str(finding)


def connection():
    return BaseHook.get_connection(CONNECTION_ID)
{% if cookiecutter.pod_operator == "native" and cookiecutter.cloud == "aws" %}

def cloud_identity() -> str:
    from airflow.providers.amazon.aws.hooks.sts import StsHook

    return StsHook(aws_conn_id=CONNECTION_ID, region_name=AWS_REGION).conn.get_caller_identity()["Arn"]
{% elif cookiecutter.pod_operator == "native" %}

def cloud_identity() -> str:
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
    from google.auth.transport.requests import Request

    credentials = GoogleBaseHook(gcp_conn_id=CONNECTION_ID).get_credentials()
    credentials.refresh(Request())
    return getattr(credentials, "service_account_email", None) or "user credentials (not a service account)"
{% endif %}

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
{%- if cookiecutter.pod_operator == "native" %}
    @task(task_id="connection")
    def check_connection() -> str:
        conn = connection()
        return step(preflight.check_cloud_connection, conn.conn_type, conn.extra_dejson)

    @task
    def credentials() -> str:
        return step(preflight.check_cloud_identity, cloud_identity())
{%- else %}
    @task(task_id="connection")
    def check_connection() -> str:
        return step(preflight.check_connection, connection().extra_dejson)

    @task
    def credentials() -> str:
        return step(preflight.check_credentials, connection().extra_dejson)
{%- endif %}

    @task
    def api_server() -> str:
        with api_client() as client:
            return step(preflight.check_api_server, client)

    @task
    def permissions() -> str:
        with api_client() as client:
            return step(preflight.check_permissions, client)

    @task
    def quota() -> str:
        with api_client() as client:
            return step(preflight.check_quota, client, connection().extra_dejson)

    @task
    def report(*findings: str) -> None:
        names = ("connection", "credentials", "api server", "permissions", "quota")
        warned = any(finding.startswith(WARNING) for finding in findings)
        print(f"Remote cluster {CLUSTER_NAME} via connection {CONNECTION_ID}: ready{' (see the warning)' if warned else ''}")
        for name, finding in zip(names, findings, strict=True):
            mark = "warn" if finding.startswith(WARNING) else "ok"
            print(f"  [{mark}] {name:<12} {finding.removeprefix(WARNING)}")

    steps = [check_connection(), credentials(), api_server(), permissions(), quota()]
    for before, after in zip(steps, steps[1:], strict=False):
        before >> after
    report(*steps)


check_remote_cluster()
