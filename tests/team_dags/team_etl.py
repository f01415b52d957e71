"""A team's own DAG on the project's cluster, written as the README shows: sync and deferrable
pod tasks, with and without resources, one pushing an XCom, one on the provider's operator."""

from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag, task
from include.remote_cluster import REMOTE_POOL, XCOM_ENABLED
from include.remote_pod import CLUSTER_ARGS, RemotePodOperator
from kubernetes.client import models as k8s


@dag(schedule="@daily", start_date=datetime(2025, 1, 1), catchup=False, tags=["team"],
     default_args={"retries": 2, "retry_delay": timedelta(minutes=5)})
def team_etl():
    extract = RemotePodOperator(task_id="extract", **CLUSTER_ARGS, pool=REMOTE_POOL, name="extract",
                                image="busybox:1.37", cmds=["sh", "-c", "echo extract"])
    transform = RemotePodOperator(task_id="transform", **CLUSTER_ARGS, pool=REMOTE_POOL, name="transform",
                                  image="busybox:1.37", cmds=["sh", "-c", "echo transform"], deferrable=True,
                                  container_resources=k8s.V1ResourceRequirements(requests={"cpu": "500m", "memory": "1Gi"},
                                                                                 limits={"memory": "2Gi"}),
                                  do_xcom_push=XCOM_ENABLED, execution_timeout=timedelta(hours=2))
    load = KubernetesPodOperator(task_id="load", **CLUSTER_ARGS, pool=REMOTE_POOL, name="load", image="busybox:1.37",
                                 cmds=["sh", "-c", "echo load"], active_deadline_seconds=3600)

    @task
    def report() -> None:
        print("done")

    extract >> transform >> load >> report()


team_etl()
