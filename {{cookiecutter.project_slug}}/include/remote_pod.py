"""The operator this project's DAGs run pods with, and how it reaches the remote cluster.
{%- set native = cookiecutter.pod_operator == "native" %}
{%- if native %}

{{ cookiecutter._clouds[cookiecutter.cloud].native.operator }} from the {{ cookiecutter.cloud }} provider: it asks the cloud for the cluster's
endpoint and CA at run time and signs in with the cloud connection {{ cookiecutter.kubernetes_conn_id }}, so there is no
kubeconfig and no cloud CLI anywhere.
{%- else %}

KubernetesPodOperator with the kubeconfig connection that scripts/write_connection.py wrote.
{%- endif %}

Every pod gets ``activeDeadlineSeconds`` from its task's ``execution_timeout``, so the cluster
stops it even when Airflow cannot: the worker is gone, the deployment was deleted, or the
task is deferred (Airflow 3.3 does not time out deferred tasks; only some triggers do
themselves). Kubernetes counts the deadline from the pod's start on a node, so time spent
waiting for a node is not counted. A retry that reattaches to the same pod (durable=True)
inherits its deadline: the pod stops at most execution_timeout after it first started.

Two fixes for cncf-kubernetes 10.25, found by this project's tests. When a deferrable task
reattaches to a pod whose container has already finished (say the worker was replaced while
a long GPU job ran), the provider skips deferring and calls ``trigger_reentry`` directly but
drops its return value, so the pod's XCom is lost and the downstream task fails.
``KeepFinishedPodResult`` keeps that value. Drop it once the provider returns it (the
template's test ``test_upstream_reattach_to_a_finished_pod_drops_the_xcom`` says when).
When the pod is deleted after the trigger saw it finish but before the task resumed (evicted,
its spot node reclaimed), the provider marks the task successful without reading the XCom;
``NoXComNoSuccess`` fails that try instead, so the retry runs the pod again (the test
``test_upstream_pod_gone_before_resume_succeeds_without_xcom`` says when to drop it).
"""

from __future__ import annotations

import copy
import math
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowException

{% if not native -%}
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from .remote_cluster import KUBERNETES_CONN_ID, POD_LABELS, REMOTE_NAMESPACE

# Everything the operator needs to reach the cluster; the DAGs add what the pod does.
CLUSTER_ARGS: dict[str, Any] = {
    "kubernetes_conn_id": KUBERNETES_CONN_ID,
    "in_cluster": False,  # explicit: the async hook mishandles None
    "namespace": REMOTE_NAMESPACE,
}
{%- elif cookiecutter.cloud == "aws" -%}
from airflow.providers.amazon.aws.operators.eks import EksPodOperator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from kubernetes.client import models as k8s

from .remote_cluster import (AWS_REGION, CLUSTER_NAME, CONNECTION_ID, POD_LABELS, REMOTE_NAMESPACE,
                             XCOM_SIDECAR_IMAGE, XCOM_SIDECAR_RESOURCES)

# Everything the operator needs to reach the cluster; the DAGs add what the pod does.
CLUSTER_ARGS: dict[str, Any] = {
    "cluster_name": CLUSTER_NAME,
    "region": AWS_REGION,
    "aws_conn_id": CONNECTION_ID,  # role_arn + ExternalId: the runner role (aws/trust-policy.json)
    "in_cluster": False,
    "namespace": REMOTE_NAMESPACE,
}
{%- else -%}
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator
from kubernetes.client import models as k8s

from .remote_cluster import (CLUSTER_NAME, CONNECTION_ID, GCP_LOCATION, GCP_PROJECT_ID, POD_LABELS, REMOTE_NAMESPACE,
                             XCOM_SIDECAR_IMAGE, XCOM_SIDECAR_RESOURCES)

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

# The pod deadline of a task without execution_timeout; None: such pods may run for ever.
POD_DEADLINE_WITHOUT_TIMEOUT: timedelta | None = timedelta(hours=24)
# The XCom sidecar's own securityContext (the provider adds the sidecar with none): no
# privilege escalation, no capabilities, the runtime's seccomp profile, a read-only root
# filesystem (it only runs sleep, cat and kill). It sets no user: the sidecar runs as the pod's
# runAsUser, the same user as a base container that sets none of its own, so it can read
# /airflow/xcom/return.json whatever the file's mode. With the pod-level non-root user of the
# example DAGs it meets the "restricted" Pod Security Standard the namespace warns on
# (k8s/namespace.yaml). A base container running as another user must leave return.json
# readable to others (json.dump to open(path, "w") does; a 0600 temporary file renamed into
# place does not). A task's own xcom_sidecar_container_security_context replaces this one;
# the kubernetes connection's extra of that name is not read by this operator.
XCOM_SIDECAR_SECURITY_CONTEXT = k8s.V1SecurityContext(
    allow_privilege_escalation=False,
    capabilities=k8s.V1Capabilities(drop=["ALL"]),
    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    read_only_root_filesystem=True,
)


class KeepFinishedPodResult:
    """Keeps the XCom of a pod found already finished when a deferrable task reattaches."""

    def execute(self, context) -> Any:
        self._finished_result = None
        result = super().execute(context)
        return self._finished_result if self.deferrable else result

    def trigger_reentry(self, context, event: dict[str, Any]) -> Any:
        self._finished_result = super().trigger_reentry(context, event)
        return self._finished_result


class NoXComNoSuccess:
    """Fails the try when the pod was deleted before its XCom could be read."""

    def trigger_reentry(self, context, event: dict[str, Any]) -> Any:
        result = super().trigger_reentry(context, event)
        if self.do_xcom_push and self.pod is None and result is None:
            raise AirflowException(f"pod {event['name']} was deleted before its XCom was read (evicted, node "
                                   "reclaimed?); a retry runs a new pod")
        return result
{%- if native %}


class ProjectXComSidecar:
    """The XCom sidecar with XCOM_SIDECAR_IMAGE and XCOM_SIDECAR_RESOURCES (include/remote_cluster.py).

    KubernetesPodOperator reads them from its kubernetes connection; the native operator has
    none, so without this its sidecar would be the provider's default from Docker Hub.
    """

    def build_pod_request_obj(self, context=None, *, dry_run: bool = False):
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        for container in pod.spec.containers:
            if container.name == PodDefaults.SIDECAR_CONTAINER_NAME:
                container.image = XCOM_SIDECAR_IMAGE
                container.resources = k8s.V1ResourceRequirements(**XCOM_SIDECAR_RESOURCES)
        return pod
{%- endif %}


class RemotePodOperator(KeepFinishedPodResult, NoXComNoSuccess, {% if native %}ProjectXComSidecar, {% endif %}{{ cookiecutter._clouds[cookiecutter.cloud].native.operator if native else "KubernetesPodOperator" }}):
    """The pod operator for the remote cluster; pass ``**CLUSTER_ARGS``.

    Its pods carry this project's labels (``POD_LABELS``) besides any the DAG gives,
    ``activeDeadlineSeconds`` = ``execution_timeout`` unless the task or its pod template sets one,
    and an XCom sidecar with ``XCOM_SIDECAR_SECURITY_CONTEXT``.
    """

    def __init__(self, *, labels: dict[str, str] | None = None, **kwargs: Any) -> None:
        # A copy per task: the provider attaches the object itself to every pod it builds.
        kwargs.setdefault("xcom_sidecar_container_security_context", copy.deepcopy(XCOM_SIDECAR_SECURITY_CONTEXT))
        super().__init__(labels={**(labels or {}), **POD_LABELS}, **kwargs)

    def build_pod_request_obj(self, context=None, *, dry_run: bool = False):
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        limit = self.execution_timeout or POD_DEADLINE_WITHOUT_TIMEOUT
        if pod.spec.active_deadline_seconds is None and limit:
            pod.spec.active_deadline_seconds = max(1, math.ceil(limit.total_seconds()))
        return pod
