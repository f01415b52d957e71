"""The operator this project's DAGs run pods with, and how it reaches the remote cluster.
{%- set native = cookiecutter.pod_operator == "native" %}
{%- if native %}

{{ cookiecutter._clouds[cookiecutter.cloud].native.operator }} from the {{ cookiecutter.cloud }} provider: it asks the cloud for the cluster's
endpoint and CA at run time and signs in with the cloud connection {{ cookiecutter.kubernetes_conn_id }}, so there is no
kubeconfig and no cloud CLI anywhere.
{%- else %}

KubernetesPodOperator with the kubeconfig connection that scripts/write_connection.py wrote.
{%- endif %}

One fix for cncf-kubernetes 10.25, found by this project's tests: when a deferrable task
reattaches to a pod whose container has already finished (say the worker was replaced while
a long GPU job ran), the provider skips deferring and calls ``trigger_reentry`` directly but
drops its return value, so the pod's XCom is lost and the downstream task fails.
``KeepFinishedPodResult`` keeps that value. Drop it once the provider returns it (the
template's test ``test_upstream_reattach_to_a_finished_pod_drops_the_xcom`` says when).
"""

from __future__ import annotations

from typing import Any

{% if not native -%}
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from include.remote_cluster import KUBERNETES_CONN_ID, POD_LABELS, REMOTE_NAMESPACE

# Everything the operator needs to reach the cluster; the DAGs add what the pod does.
CLUSTER_ARGS: dict[str, Any] = {
    "kubernetes_conn_id": KUBERNETES_CONN_ID,
    "in_cluster": False,  # explicit: the async hook mishandles None
    "namespace": REMOTE_NAMESPACE,
}
{%- elif cookiecutter.cloud == "aws" -%}
from airflow.providers.amazon.aws.operators.eks import EksPodOperator

from include.remote_cluster import AWS_REGION, CLUSTER_NAME, CONNECTION_ID, POD_LABELS, REMOTE_NAMESPACE

# Everything the operator needs to reach the cluster; the DAGs add what the pod does.
CLUSTER_ARGS: dict[str, Any] = {
    "cluster_name": CLUSTER_NAME,
    "region": AWS_REGION,
    "aws_conn_id": CONNECTION_ID,  # role_arn + ExternalId: the runner role (aws/trust-policy.json)
    "in_cluster": False,
    "namespace": REMOTE_NAMESPACE,
}
{%- else -%}
from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator

from include.remote_cluster import CLUSTER_NAME, CONNECTION_ID, GCP_LOCATION, GCP_PROJECT_ID, POD_LABELS, REMOTE_NAMESPACE

# Everything the operator needs to reach the cluster; the DAGs add what the pod does.
CLUSTER_ARGS: dict[str, Any] = {
    "project_id": GCP_PROJECT_ID,
    "location": GCP_LOCATION,
    "cluster_name": CLUSTER_NAME,
    "gcp_conn_id": CONNECTION_ID,  # the deployment's service account (Application Default Credentials)
    "in_cluster": False,
    "namespace": REMOTE_NAMESPACE,
}
{%- endif %}


class KeepFinishedPodResult:
    """Keeps the XCom of a pod found already finished when a deferrable task reattaches."""

    def execute(self, context) -> Any:
        self._finished_result = None
        result = super().execute(context)
        return self._finished_result if self.deferrable else result

    def trigger_reentry(self, context, event: dict[str, Any]) -> Any:
        self._finished_result = super().trigger_reentry(context, event)
        return self._finished_result


class RemotePodOperator(KeepFinishedPodResult, {{ cookiecutter._clouds[cookiecutter.cloud].native.operator if native else "KubernetesPodOperator" }}):
    """The pod operator for the remote cluster; pass ``**CLUSTER_ARGS``.

    Its pods carry this project's labels (``POD_LABELS``) besides any the DAG gives.
    """

    def __init__(self, *, labels: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(labels={**(labels or {}), **POD_LABELS}, **kwargs)
