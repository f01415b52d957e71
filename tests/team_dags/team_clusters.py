"""A team's own DAG in a project with added clusters: pods picked by cluster name (clusters/)."""

from datetime import datetime, timedelta

from airflow.sdk import dag
from clusters import RemotePod, names


@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["team"],
     default_args={"retries": 2, "retry_delay": timedelta(minutes=5)})
def team_clusters():
    RemotePod("onprem", task_id="on_prem_batch", name="batch", image="busybox:1.37", cmds=["sh", "-c", "echo on prem"])
    RemotePod(names()[0], task_id="on_primary", name="primary", image="busybox:1.37", cmds=["true"], deferrable=True,
              do_xcom_push=True)


team_clusters()
