"""Run a pod on the remote cluster with KubernetesPodOperator.

The pod runs in its own namespace with the least-privilege Role from k8s/. The task is
deferrable: the worker slot is freed while the pod runs and the triggerer (same image,
same exec plugin) watches it. Logs stream into the task log, the pod is deleted when it
finishes, and the timeouts leave room for a GPU node group scaling up from zero.
{%- if cookiecutter.xcom %}
The pod's /airflow/xcom/return.json becomes the task's XCom.{% endif %}
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag{% if cookiecutter.xcom %}, task{% endif %}
from kubernetes.client import models as k8s

from include.remote_cluster import EXAMPLE_POD_LIMITS, EXAMPLE_POD_REQUESTS, REMOTE_POOL
from include.remote_pod import CLUSTER_ARGS, RemotePodOperator

IMAGE = "python:3.12-slim"
# A cold node group (GPU nodes especially) takes 4-10 minutes to add a node; the
# provider's 120 s default would fail the task while the pod is still Pending.
NODE_SCALE_UP_TIMEOUT_SECONDS = 15 * 60
# Set to True to ask for a GPU; the keys below are the common NVIDIA ones, adjust to your
# node group's labels and taints. False keeps the example runnable on any node.
USE_GPU = False
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]

{%- if cookiecutter.xcom %}
SCRIPT = """
import json, os, platform
print(f"hello from {platform.node()} on the remote cluster")
os.makedirs("/airflow/xcom", exist_ok=True)
with open("/airflow/xcom/return.json", "w") as f:
    json.dump({"node": platform.node(), "python": platform.python_version()}, f)
"""
{%- else %}
SCRIPT = """
import platform
print(f"hello from {platform.node()} on the remote cluster")
"""
{%- endif %}

# Requests and memory limit are constants the preflight shares: it checks that this pod fits in
# what the namespace's quota (k8s/resourcequota.yaml) has left.
resources = k8s.V1ResourceRequirements(
    requests=EXAMPLE_POD_REQUESTS,
    limits={**EXAMPLE_POD_LIMITS, **({"nvidia.com/gpu": "1"} if USE_GPU else {})},
)


@dag(
    dag_id="remote_kpo",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["remote-kpo"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    doc_md=__doc__,
)
def remote_kpo():
    {% if cookiecutter.xcom %}hello_remote = {% endif %}RemotePodOperator(
        task_id="hello_remote",
        **CLUSTER_ARGS,  # connection, namespace: include/remote_pod.py
        {{ "pod_name" if cookiecutter.pod_operator == "native" and cookiecutter.cloud == "aws" else "name" }}="hello-remote",
        random_name_suffix=True,
        image=IMAGE,
        cmds=["python", "-c"],
        arguments=[SCRIPT],
        container_resources=resources,
        node_selector=GPU_NODE_SELECTOR if USE_GPU else None,
        tolerations=GPU_TOLERATIONS if USE_GPU else None,
        # The container meets the "restricted" Pod Security Standard the namespace warns on
        # (so does the XCom sidecar, when present: include/remote_pod.py).
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=65534,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        deferrable=True,
        get_logs=True,
        log_events_on_failure=True,
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        durable=True,  # a restarted worker reattaches to the running pod instead of starting another
        startup_timeout_seconds=NODE_SCALE_UP_TIMEOUT_SECONDS,
        schedule_timeout_seconds=NODE_SCALE_UP_TIMEOUT_SECONDS,
        execution_timeout=timedelta(hours=1),
        pool=REMOTE_POOL,
        do_xcom_push={{ "True" if cookiecutter.xcom else "False" }},
    )
{%- if cookiecutter.xcom %}

    @task
    def use_result(result: dict) -> None:
        print(f"the remote pod ran on {result['node']} with Python {result['python']}")

    use_result(hello_remote.output)
{%- endif %}


remote_kpo()
