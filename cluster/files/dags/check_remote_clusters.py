"""Preflight of every remote cluster of this project: run it after adding a cluster or changing one.

One task group per cluster runs the steps of dags/check_remote_cluster.py with that cluster's
own checks (its include/preflight.py): connection, credentials, API server, permissions, quota.
The first failing step of a cluster names what is missing and how to fix it, and stops only that
cluster's later steps; the other clusters are checked all the same. The report task then prints
one line per cluster and step, and fails naming every cluster that is not ready, e.g.
"not ready: gke-gpu (permissions: missing in namespace ...)".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from airflow.sdk import BaseHook, TaskGroup, chain, dag, task
from airflow.sdk.exceptions import AirflowFailException
from clusters import Cluster, cluster, names

log = logging.getLogger(__name__)
WARNING = "WARNING: "
FAILURE = "failure"  # the XCom key a failing step leaves its message under, for the report


def connection(found: Cluster):
    return BaseHook.get_connection(found.settings.CONNECTION_ID)


def aws_identity(settings) -> str:
    from airflow.providers.amazon.aws.hooks.sts import StsHook

    return StsHook(aws_conn_id=settings.CONNECTION_ID, region_name=settings.AWS_REGION).conn.get_caller_identity()["Arn"]


def gcp_identity(settings) -> str:
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
    from google.auth.transport.requests import Request

    credentials = GoogleBaseHook(gcp_conn_id=settings.CONNECTION_ID).get_credentials()
    credentials.refresh(Request())
    return getattr(credentials, "service_account_email", None) or "user credentials (not a service account)"


# Who a native operator's cloud connection signs in as, per cloud with a native operator.
CLOUD_IDENTITY: dict[str, Callable[..., str]] = {"aws": aws_identity, "gcp": gcp_identity}


def check_connection(found: Cluster) -> str:
    conn = connection(found)
    if found.native:
        return found.preflight.check_cloud_connection(conn.conn_type, conn.extra_dejson)
    return found.preflight.check_connection(conn.extra_dejson)


def check_credentials(found: Cluster) -> str:
    if found.native:
        return found.preflight.check_cloud_identity(CLOUD_IDENTITY[found.settings.CLOUD](found.settings))
    return found.preflight.check_credentials(connection(found).extra_dejson)


def check_api_server(found: Cluster) -> str:
    with found.api_client() as client:
        return found.preflight.check_api_server(client)


def check_permissions(found: Cluster) -> str:
    with found.api_client() as client:
        return found.preflight.check_permissions(client)


def check_quota(found: Cluster) -> str:
    with found.api_client() as client:
        return found.preflight.check_quota(client, connection(found).extra_dejson)


# The steps in order (task id -> check); each needs the one before it.
STEPS: dict[str, Callable[[Cluster], str]] = {
    "connection": check_connection,
    "credentials": check_credentials,
    "api_server": check_api_server,
    "permissions": check_permissions,
    "quota": check_quota,
}


def run_step(name: str, step: str, ti) -> str:
    """Run one step of one cluster. A failure is final (retrying a missing permission cannot
    help) and leaves its message for the report; a finding that needs attention is logged as a
    warning and marked so in the report."""
    found = cluster(name)
    try:
        finding = STEPS[step](found)
    except found.preflight.PreflightError as err:
        ti.xcom_push(key=FAILURE, value=str(err))
        raise AirflowFailException(f"cluster {name}: {err}") from None
    except Exception as err:  # unexpected: retried; the report shows the last try's error
        ti.xcom_push(key=FAILURE, value=f"{err.__class__.__name__}: {err}")
        raise
    if isinstance(finding, found.preflight.Attention):
        log.warning("cluster %s: %s", name, finding)
        return f"{WARNING}{finding}"
    print(f"OK: cluster {name}: {finding}")
    return str(finding)


# {cluster name: [(step, finding of a passed step or None, message of a failed step or None)]}
Findings = dict[str, list[tuple[str, str | None, str | None]]]


def readiness(findings: Findings) -> tuple[list[str], list[str]]:
    """(report lines, one "<cluster> (<step>: <why>)" per cluster that is not ready)."""
    lines: list[str] = []
    not_ready: list[str] = []
    for name, results in findings.items():
        failed = None
        rows = []
        for step, finding, failure in results:
            label = step.replace("_", " ")
            if finding is not None:
                mark, text = ("warn" if finding.startswith(WARNING) else "ok"), finding.removeprefix(WARNING)
            elif failed is not None:
                mark, text = "-", "not run: an earlier step failed"
            else:
                mark, text = "FAILED", failure or "failed without a message: see the task's log"
                failed = f"{label}: {text}"
            rows.append(f"  {f'[{mark}]':<8} {label:<12} {text}")
        warned = any(row.startswith("  [warn]") for row in rows)
        state = f"NOT READY ({failed})" if failed else "ready (see the warning)" if warned else "ready"
        lines += [f"Remote cluster {name}: {state}", *rows]
        if failed:
            not_ready.append(f"{name} ({failed})")
    return lines, not_ready


@dag(
    dag_id="check_remote_clusters",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["remote-kpo", "preflight", "clusters"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=15)},
    doc_md=__doc__,
)
def check_remote_clusters():
    def step_task(name: str, step: str):
        @task(task_id=step)
        def run(**context) -> str:
            return run_step(name, step, context["ti"])

        return run()

    groups = []
    for name in names():
        with TaskGroup(group_id=cluster(name).key, tooltip=f"cluster {name}") as group:
            chain(*(step_task(name, step) for step in STEPS))
        groups.append(group)

    @task(trigger_rule="all_done")
    def report(**context) -> None:
        ti = context["ti"]
        findings: Findings = {}
        for name in names():
            ids = [(step, f"{cluster(name).key}.{step}") for step in STEPS]
            findings[name] = [(step, ti.xcom_pull(task_ids=task_id), ti.xcom_pull(task_ids=task_id, key=FAILURE))
                              for step, task_id in ids]
        lines, not_ready = readiness(findings)
        print("\n".join(lines))
        if not_ready:
            raise AirflowFailException(f"not ready: {'; '.join(not_ready)}")

    groups >> report()


check_remote_clusters()
