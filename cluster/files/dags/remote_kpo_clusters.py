"""Run a pod on every remote cluster of this project at once: the primary and each added one.

One task per cluster (hello_<cluster>), all in parallel, each with its cluster's own operator,
connection, namespace and pool (clusters/__init__.py), and the good defaults of
dags/remote_kpo.py: deferrable, logs in the task log, the pod deleted when it finishes, the
"restricted" security context, timeouts that leave room for a node group scaling up. Clusters
with XCom return a result that the last task prints.

Your own DAGs pick a cluster by name the same way:

    from clusters import RemotePod, cluster, cluster_args

    RemotePod("gke-gpu", task_id="train", name="train", image="...", ...)
    KubernetesPodOperator(task_id="x", **cluster_args("eks-batch"), ...)  # a kubernetes-operator cluster
    cluster("gke-gpu").settings.REMOTE_NAMESPACE                            # any of its settings
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from clusters import RemotePod, cluster, names
from kubernetes.client import models as k8s

IMAGE = "python:3.12-slim"
# A cold node group (GPU nodes especially) takes 4-10 minutes to add a node.
NODE_SCALE_UP_TIMEOUT_SECONDS = 15 * 60
HELLO = """
import platform
print(f"hello from {platform.node()} on cluster {CLUSTER}")
"""
# The pod's /airflow/xcom/return.json becomes the task's XCom (clusters with XCOM_ENABLED).
HELLO_XCOM = HELLO + """
import json, os
os.makedirs("/airflow/xcom", exist_ok=True)
with open("/airflow/xcom/return.json", "w") as f:
    json.dump({"node": platform.node(), "python": platform.python_version()}, f)
"""


def hello(name: str):
    """The hello pod of one cluster, sized by its EXAMPLE_POD_REQUESTS/LIMITS (its preflight's
    quota step checks that this pod fits)."""
    found = cluster(name)
    settings = found.settings
    return RemotePod(
        name,  # the cluster: its operator class, connection, namespace and pool
        task_id=f"hello_{found.key}",
        name="hello-remote",
        random_name_suffix=True,
        image=IMAGE,
        cmds=["python", "-c"],
        arguments=[f"CLUSTER = {name!r}\n" + (HELLO_XCOM if found.xcom else HELLO)],
        container_resources=k8s.V1ResourceRequirements(requests=settings.EXAMPLE_POD_REQUESTS,
                                                        limits=settings.EXAMPLE_POD_LIMITS),
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
        durable=True,
        startup_timeout_seconds=NODE_SCALE_UP_TIMEOUT_SECONDS,
        schedule_timeout_seconds=NODE_SCALE_UP_TIMEOUT_SECONDS,
        execution_timeout=timedelta(hours=1),
        do_xcom_push=found.xcom,
    )


@dag(
    dag_id="remote_kpo_clusters",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["remote-kpo", "clusters"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    doc_md=__doc__,
)
def remote_kpo_clusters():
    pods = {name: hello(name) for name in names()}
    results = {name: pod.output for name, pod in pods.items() if cluster(name).xcom}
    if results:

        @task
        def use_results(results: dict[str, dict]) -> None:
            for name, result in results.items():
                print(f"cluster {name}: the pod ran on {result['node']} with Python {result['python']}")

        use_results(results)


remote_kpo_clusters()
