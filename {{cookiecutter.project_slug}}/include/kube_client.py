"""A Kubernetes API client for the remote cluster, signed in the way this project's pods are
started. The preflight (dags/check_remote_cluster.py) and the janitor
(dags/remote_pod_janitor.py) use it; each of their calls passes
``_request_timeout=preflight.API_TIMEOUT`` (the client has no default timeout of its own).
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
{%- if cookiecutter.pod_operator == "native" and cookiecutter.cloud == "aws" %}

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from kubernetes.client import ApiClient

from .remote_cluster import AWS_REGION, CLUSTER_NAME, CONNECTION_ID, REMOTE_NAMESPACE


@contextmanager
def api_client() -> Generator[ApiClient, None, None]:
    """The client EksPodOperator makes: DescribeCluster for endpoint and CA, tokens signed
    with the connection's role by the provider's own exec plugin."""
    from airflow.providers.amazon.aws.hooks.eks import EksHook

    hook = EksHook(aws_conn_id=CONNECTION_ID, region_name=AWS_REGION)
    with hook.generate_config_file_with_credentials(eks_cluster_name=CLUSTER_NAME, pod_namespace=REMOTE_NAMESPACE) as (
        config_file,
        _,
    ):
        yield KubernetesHook(config_file=config_file, in_cluster=False).get_conn()
{%- elif cookiecutter.pod_operator == "native" %}

from kubernetes.client import ApiClient

from .remote_pod import CLUSTER_ARGS, RemotePodOperator


@contextmanager
def api_client() -> Generator[ApiClient, None, None]:
    """The client GKEStartPodOperator makes: clusters.get for endpoint and CA, google-auth tokens."""
    yield RemotePodOperator(task_id="api_client_probe", image="unused", **CLUSTER_ARGS).hook.get_conn()
{%- else %}

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from kubernetes.client import ApiClient

from .remote_cluster import CONNECTION_ID


@contextmanager
def api_client() -> Generator[ApiClient, None, None]:
    """The client KubernetesPodOperator makes from the kubeconfig connection."""
    yield KubernetesHook(conn_id=CONNECTION_ID, in_cluster=False).api_client
{%- endif %}
