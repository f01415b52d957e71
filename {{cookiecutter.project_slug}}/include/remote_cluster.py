"""The remote cluster this project runs pods on: one place for names the DAGs, the
connection script and the tests share. Plain constants (one read from the environment:
AIRFLOW_INSTANCE), no I/O, importable without Airflow.
"""

from __future__ import annotations
{%- if cookiecutter.pod_operator != "native" %}

import json  # the kubernetes connection's extra
{%- endif %}
import os
import re

CLOUD = {{ cookiecutter.cloud | tojson }}
CLUSTER_NAME = {{ cookiecutter.cluster_name | tojson }}
{%- if cookiecutter._cluster_id %}
# The name DAGs pick this cluster by: clusters/__init__.py, cluster_args(CLUSTER_ID).
CLUSTER_ID = {{ cookiecutter._cluster_id | tojson }}
{%- endif %}
# The Airflow connection the pods are started with: a kubernetes connection holding a
# kubeconfig, or with the native operator the cloud's own connection (see POD_OPERATOR).
CONNECTION_ID = {{ cookiecutter.kubernetes_conn_id | tojson }}
KUBERNETES_CONN_ID = CONNECTION_ID
POD_OPERATOR = {{ cookiecutter.pod_operator | tojson }}
{%- if cookiecutter.pod_operator == "native" %}
CONNECTION_TYPE = {{ cookiecutter._clouds[cookiecutter.cloud].native.conn_type | tojson }}
{%- else %}
CONNECTION_TYPE = "kubernetes"
{%- endif %}
REMOTE_NAMESPACE = {{ cookiecutter.namespace | tojson }}
# Caps how many remote pods run at once (also created by airflow_settings.yaml locally).
{%- if cookiecutter._cluster_id %}
REMOTE_POOL = {{ ("remote_kpo_" ~ cookiecutter._cluster_id | replace("-", "_")) | tojson }}
{%- else %}
REMOTE_POOL = "remote_kpo"
{%- endif %}
REMOTE_POOL_SLOTS = 4
XCOM_ENABLED = {{ "True" if cookiecutter.xcom else "False" }}
# The XCom sidecar of tasks with do_xcom_push=True: a shell that waits while the operator reads
# /airflow/xcom/return.json through it. The default is the provider's own image, from Docker
# Hub. If the cluster cannot pull it (no egress, private registry only, an admission policy
# on images), mirror it and name your copy, pinned by digest so it cannot change under you:
# "<registry>/library/alpine:3.24.2@sha256:<digest>".
{%- if cookiecutter.pod_operator == "native" %} include/remote_pod.py applies both values to
# the pods: deploy (locally: astro dev restart).
{%- else %} Then rerun scripts/write_connection.py
# and load connection.env again: the connection carries both values.
{%- endif %}
XCOM_SIDECAR_IMAGE = "alpine:3.24.2"
# The provider's requests plus a memory limit: a quota on limits.memory charges 32Mi for this
# shell instead of a namespace's default limit.
XCOM_SIDECAR_RESOURCES: dict[str, dict[str, str]] = {"requests": {"cpu": "1m", "memory": "10Mi"},
                                                     "limits": {"memory": "32Mi"}}
# Every pod this project starts carries these labels (include/remote_pod.py adds them), next to
# the dag_id, task_id, run_id and try_number labels of the pod operator itself; the janitor DAG
# (dags/remote_pod_janitor.py) finds this project's pods by them.
PROJECT_LABEL = "app.kubernetes.io/part-of"
# Which Airflow started the pod, so that the janitor of `astro dev start` and those of the
# deployments sharing this namespace (dev, prod) never take each other's pods for orphans: Astro
# sets ASTRO_DEPLOYMENT_ID in a deployment; locally it is "local". KPO_AIRFLOW_INSTANCE (in .env)
# overrides both, e.g. one value per developer when several run locally against one cluster.
INSTANCE_LABEL = "airflow_instance"


def airflow_instance(env=os.environ) -> str:
    """This Airflow's name as a valid label value (63 characters of A-Z a-z 0-9 - _ .)."""
    name = env.get("KPO_AIRFLOW_INSTANCE") or env.get("ASTRO_DEPLOYMENT_ID") or "local"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63].strip("-_.") or "local"


AIRFLOW_INSTANCE = airflow_instance()
POD_LABELS = {"app.kubernetes.io/managed-by": "airflow", PROJECT_LABEL: {{ cookiecutter.project_slug | replace('_', '-') | tojson }},
              INSTANCE_LABEL: AIRFLOW_INSTANCE}
# dags/remote_kpo_gpu.py: a GPU node group that exists only while its pod runs.
GPU_NODE_GROUP = {{ "True" if cookiecutter.gpu_node_group else "False" }}

# Every API call KubernetesPodOperator makes with this project's options, as
# (verb, resource, subresource). k8s/role.yaml grants exactly these; the preflight DAG asks
# the API server about each one with a SelfSubjectAccessReview.
REQUIRED_PERMISSIONS: list[tuple[str, str, str]] = [
    ("create", "pods", ""),
    ("delete", "pods", ""),
    ("get", "pods", ""),
    ("list", "pods", ""),
    ("patch", "pods", ""),
    ("get", "pods", "log"),
    ("list", "events", ""),
    ("watch", "events", ""),  # k8s/role.yaml says why
]
if XCOM_ENABLED:
    REQUIRED_PERMISSIONS += [("create", "pods", "exec"), ("get", "pods", "exec")]
{%- set limits = cookiecutter._namespace_limits %}

# The namespace's limits: k8s/resourcequota.yaml and k8s/resource-defaults.yaml hold these values too
# (the project's tests compare them: change both). Size the quota to the pods you run at once,
# the sum of their CPU and memory requests and memory limits; the preflight reports its use.
QUOTA_NAME = {{ cookiecutter.__runner_name | tojson }}
LIMIT_RANGE_NAME = {{ cookiecutter.__runner_name | tojson }}
NAMESPACE_QUOTA: dict[str, str] = {
{%- for key, value in limits.quota.items() %}
    {{ key | tojson }}: {{ (limits.gpus_with_gpu_node_group if key == "requests.nvidia.com/gpu" and cookiecutter.gpu_node_group else value) | tojson }},
{%- endfor %}
}
# What a container that sets no resources of its own gets (the LimitRange's defaults).
CONTAINER_DEFAULT_REQUESTS: dict[str, str] = {{ limits.container_default_requests | tojson }}
CONTAINER_DEFAULT_LIMITS: dict[str, str] = {{ limits.container_default_limits | tojson }}
# remote_kpo's container (dags/remote_kpo.py); the preflight checks that its pod fits in what the
# quota has left.
EXAMPLE_POD_REQUESTS: dict[str, str] = {"cpu": "100m", "memory": "128Mi"}
EXAMPLE_POD_LIMITS: dict[str, str] = {"memory": "256Mi"}
# The preflight's own reads, as (verb, resource, name): the quota and the LimitRange, each by
# its name only (k8s/role.yaml, the rule with resourceNames).
NAMED_PERMISSIONS: list[tuple[str, str, str]] = [
    ("get", "limitranges", LIMIT_RANGE_NAME),
    ("get", "resourcequotas", QUOTA_NAME),
]

# Rendered with obviously fake values until scripts/write_connection.py fills them in.
PLACEHOLDER_SERVER = "https://cluster-endpoint.example.invalid"

{%- set c = cookiecutter %}
{#- The template's example answers (the defaults in cookiecutter.json), per cloud. Only the
    names of the answers still equal to them are rendered, never the values. #}
{%- set example_answers = {
    "aws": {"aws_account_id": "123456789012",
            "aws_astro_workload_identity_arn": "arn:aws:iam::111122223333:role/astro-example-deployment"},
    "gcp": {"gcp_project_id": "example-project",
            "gcp_service_account_email": "astro-example@example-project.iam.gserviceaccount.com"},
    "azure": {"azure_subscription_id": "00000000-0000-0000-0000-000000000000",
              "azure_resource_group": "example-rg",
              "azure_tenant_id": "11111111-1111-1111-1111-111111111111",
              "azure_identity_client_id": "22222222-2222-2222-2222-222222222222",
              "azure_identity_object_id": "33333333-3333-3333-3333-333333333333"},
}.get(c.cloud, {}) %}
{%- set still_examples = [] %}
{%- for key, value in example_answers.items() if c[key] == value %}{% set _ = still_examples.append(key) %}{% endfor %}
# Answers that still hold the template's example values, space-separated ("" in a real
# project): scripts/setup_remote.sh refuses to touch a cloud account with them.
EXAMPLE_ANSWERS = {{ still_examples | join(" ") | tojson }}
{%- if c.cloud == "aws" %}

# EKS: include/kube_auth/eks_token.py assumes the runner role and presigns an STS call.
AWS_REGION = {{ c.aws_region | tojson }}
RUNNER_ROLE_ARN = {{ c.__aws_role_arn | tojson }}
# Required by the role's trust policy (aws/trust-policy.json); not a secret.
RUNNER_EXTERNAL_ID = {{ c.__aws_external_id | tojson }}
RUNNER_SESSION_NAME = "airflow-remote-kpo"
# The Kubernetes user EKS sees for that session, and the group its access entry adds.
AWS_PARTITION = {{ c.__aws_partition | tojson }}
AWS_ACCOUNT_ID = {{ c.aws_account_id | tojson }}
RUNNER_ROLE_NAME = RUNNER_ROLE_ARN.rsplit("/", 1)[1]
RUNNER_SESSION_USER = f"arn:{AWS_PARTITION}:sts::{AWS_ACCOUNT_ID}:assumed-role/{RUNNER_ROLE_NAME}/{RUNNER_SESSION_NAME}"
K8S_GROUP = {{ c.__k8s_group | tojson }}
{%- if c.pod_operator == "native" %}
# EksPodOperator makes its own kubeconfig and token at run time.
EXEC_PLUGIN: dict | None = None
{%- else %}
EXEC_PLUGIN: dict | None = {
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "command": "python",
    "args": [
        "/usr/local/airflow/{{ "clusters/" ~ c._cluster_id | replace("-", "_") ~ "/" if c._cluster_id else "" }}include/kube_auth/eks_token.py",
        "--cluster-name", CLUSTER_NAME,
        "--region", AWS_REGION,
        "--role-arn", RUNNER_ROLE_ARN,
        "--external-id", RUNNER_EXTERNAL_ID,
    ],
    "interactiveMode": "Never",
}
{%- endif %}
{%- elif c.cloud == "gcp" %}

# GKE: gke-gcloud-auth-plugin (installed by the Dockerfile) on Application Default
# Credentials: the deployment's workload identity when deployed, your ADC file locally.
GCP_PROJECT_ID = {{ c.gcp_project_id | tojson }}
GCP_LOCATION = {{ c.gcp_location | tojson }}
RUNNER_IDENTITY = {{ c.gcp_service_account_email | tojson }}
{%- if c.pod_operator == "native" %}
# GKEStartPodOperator signs in with google-auth tokens: no plugin, no gcloud.
EXEC_PLUGIN: dict | None = None
{%- else %}
EXEC_PLUGIN: dict | None = {
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "command": "gke-gcloud-auth-plugin",
    "args": ["--use_application_default_credentials"],
    "provideClusterInfo": True,
    "interactiveMode": "Never",
    "installHint": "gke-gcloud-auth-plugin is installed by this project's Dockerfile",
}
{%- endif %}
{%- elif c.cloud == "azure" %}

# AKS: kubelogin (installed by the Dockerfile) exchanges the deployment's federated token
# for an Entra ID token for the AKS server application. Locally, AAD_LOGIN_METHOD in .env
# switches the login mode (see README).
AZURE_SUBSCRIPTION_ID = {{ c.azure_subscription_id | tojson }}
AZURE_RESOURCE_GROUP = {{ c.azure_resource_group | tojson }}
AZURE_TENANT_ID = {{ c.azure_tenant_id | tojson }}
AZURE_IDENTITY_CLIENT_ID = {{ c.azure_identity_client_id | tojson }}
# Kubernetes RBAC (k8s/rolebinding.yaml) names the identity by this id.
AZURE_IDENTITY_OBJECT_ID = {{ c.azure_identity_object_id | tojson }}
AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"  # the same for every AKS cluster
EXEC_PLUGIN: dict | None = {
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "command": "kubelogin",
    "args": [
        "get-token",
        "--login", "workloadidentity",
        "--server-id", AKS_SERVER_APP_ID,
        "--client-id", AZURE_IDENTITY_CLIENT_ID,
        "--tenant-id", AZURE_TENANT_ID,
    ],
    "interactiveMode": "Never",
    "installHint": "kubelogin is installed by this project's Dockerfile",
}
{%- else %}

# Any cluster: a short-lived ServiceAccount token written into the connection by
# scripts/write_connection.py (`kubectl create token --duration`), no exec plugin.
SERVICE_ACCOUNT = {{ c.__runner_name | tojson }}
EXEC_PLUGIN: dict | None = None
{%- endif %}
{%- if c.gpu_node_group %}

# The GPU node group of dags/remote_kpo_gpu.py. One per cluster at a time (the DAG runs one
# run at a time); the name prefix is what the IAM grants are scoped to.
GPU_NODE_GROUP_NAME = "airflow-gpu-remote-kpo"
{%- if c.cloud == "aws" %}
# The node-group calls go through an aws connection that assumes the runner role.
AWS_CONN_ID = CONNECTION_ID if POD_OPERATOR == "native" else f"{CONNECTION_ID}_aws"
GPU_NODE_ROLE_NAME = {{ c.__aws_gpu_node_role_name | tojson }}
GPU_NODE_ROLE_ARN = f"arn:{AWS_PARTITION}:iam::{AWS_ACCOUNT_ID}:role/{GPU_NODE_ROLE_NAME}"
GPU_INSTANCE_TYPE = "g5.xlarge"  # 1 NVIDIA A10G
# Bottlerocket's NVIDIA variant ships the driver and the Kubernetes device plugin.
GPU_AMI_TYPE = "BOTTLEROCKET_x86_64_NVIDIA"
{%- else %}
GCP_CONN_ID = CONNECTION_ID if POD_OPERATOR == "native" else f"{CONNECTION_ID}_gcp"
GPU_MACHINE_TYPE = "g2-standard-4"
GPU_ACCELERATOR = "nvidia-l4"
# The nodes' own identity (logs and metrics only), created by scripts/setup_remote.sh.
GPU_NODE_SERVICE_ACCOUNT = f"airflow-gpu-nodes@{GCP_PROJECT_ID}.iam.gserviceaccount.com"
# The custom IAM role (gcp/gpu-node-pools-role.yaml) the runner gets for node pools.
GPU_CUSTOM_ROLE_ID = "airflowGpuNodePools"
{%- endif %}
{%- endif %}


def kube_config(server: str = PLACEHOLDER_SERVER, ca_data: str = "", token: str = "") -> dict:
    """The kubeconfig stored in the Airflow connection's ``kube_config`` extra."""
    cluster: dict = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    user: dict = {"exec": EXEC_PLUGIN} if EXEC_PLUGIN else {"token": token}
{%- if c.cloud == "aws" and c.pod_operator != "native" %}
    # eks_token.py re-checks a cached token with this server once a minute; the triggerer's
    # client ignores provideClusterInfo, so the kubeconfig names the server to the plugin.
    user["exec"] = {**EXEC_PLUGIN, "env": [{"name": "KPO_EKS_CLUSTER_SERVER", "value": server},
                                           {"name": "KPO_EKS_CLUSTER_CA_DATA", "value": ca_data}]}
{%- endif %}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": cluster}],
        "users": [{"name": "airflow", "user": user}],
        "contexts": [
            {
                "name": CLUSTER_NAME,
                "context": {"cluster": CLUSTER_NAME, "user": "airflow", "namespace": REMOTE_NAMESPACE},
            }
        ],
        "current-context": CLUSTER_NAME,
    }


{%- if c.cloud == "aws" and (c.pod_operator == "native" or c.gpu_node_group) %}


def aws_connection_extra() -> dict:
    """An aws connection that assumes the runner role (the access entry maps it to the Role's
    group); the deployment's own workload identity signs that AssumeRole call."""
    return {"role_arn": RUNNER_ROLE_ARN, "assume_role_kwargs": {"ExternalId": RUNNER_EXTERNAL_ID},
            "region_name": AWS_REGION}
{%- elif c.cloud == "gcp" and (c.pod_operator == "native" or c.gpu_node_group) %}


def gcp_connection_extra() -> dict:
    """A google connection on Application Default Credentials: the deployment's service
    account (RUNNER_IDENTITY) when deployed, your ADC file locally."""
    return {"project": GCP_PROJECT_ID}
{%- endif %}


def connection_extra(**kube_config_args: str) -> dict:
    """The ``extra`` of the connection ``CONNECTION_ID`` (of type ``CONNECTION_TYPE``)."""
{%- if c.pod_operator == "native" %}
    return {{ c.cloud }}_connection_extra()
{%- else %}
    return {"kube_config": kube_config(**kube_config_args), "namespace": REMOTE_NAMESPACE,
            # Read by the pod operator when it adds the XCom sidecar (resources as a JSON string).
            "xcom_sidecar_container_image": XCOM_SIDECAR_IMAGE,
            "xcom_sidecar_container_resources": json.dumps(XCOM_SIDECAR_RESOURCES)}
{%- endif %}


def connections(**kube_config_args: str) -> list[tuple[str, str, dict]]:
    """Every connection this project's DAGs use, as (conn_id, conn_type, extra)."""
    found = [(CONNECTION_ID, CONNECTION_TYPE, connection_extra(**kube_config_args))]
{%- if c.gpu_node_group and c.pod_operator != "native" %}
    # The GPU DAG's node-group calls use the cloud's own API and connection.
    found.append(({{ "AWS_CONN_ID" if c.cloud == "aws" else "GCP_CONN_ID" }}, {{ c._clouds[c.cloud].native.conn_type | tojson }}, {{ c.cloud }}_connection_extra()))
{%- endif %}
    return found
