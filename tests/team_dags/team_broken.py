"""A team's DAG that breaks the rules, one task a rule: the project's tests name each."""

from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag
from clusters import RemotePod
from include.remote_cluster import REMOTE_POOL
from include.remote_pod import CLUSTER_ARGS, RemotePodOperator


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["team"],
     default_args={"retries": 2, "retry_delay": timedelta(minutes=5)})
def team_broken():
    RemotePodOperator(task_id="other_namespace", **{**CLUSTER_ARGS, "namespace": "default"}, pool=REMOTE_POOL,
                      image="busybox:1.37")
    RemotePodOperator(task_id="in_cluster_unset", **{k: v for k, v in CLUSTER_ARGS.items() if k != "in_cluster"},
                      pool=REMOTE_POOL, image="busybox:1.37")
    RemotePodOperator(task_id="default_pool", **CLUSTER_ARGS, image="busybox:1.37")
    KubernetesPodOperator(task_id="no_deadline", **CLUSTER_ARGS, pool=REMOTE_POOL, image="busybox:1.37")
    KubernetesPodOperator(task_id="no_cluster_args", image="busybox:1.37", pool=REMOTE_POOL)
    RemotePod("onprem", task_id="xcom_without_exec", image="busybox:1.37", do_xcom_push=True)


team_broken()
