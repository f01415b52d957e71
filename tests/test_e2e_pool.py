"""The pool caps the pods that run at once, with deferrable tasks, in a real scheduler.

A rendered project (generic cluster, the API double) gets a DAG of FANOUT deferrable pod tasks in
its pool; the pool is first made as `astro dev start` and `astro deployment pool create` make it:
SLOTS slots, include_deferred off. Then Airflow runs as deployed: scheduler (LocalExecutor), dag
processor, triggerer and execution API server, each loading the project's plugins/ folder. The
project's plugin (plugins/remote_kpo_pools.py) turns include_deferred on as they start, so at
most SLOTS pods run (pending or running) at once; with the plugin taken out, the same run has more pods at once (so
the count can fail). Real Airflow 3.3 and cncf-kubernetes, only the image's packages; simulated:
the cluster (tests/kube_api_double).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from e2e_harness import Cluster, migrate, stop_groups

SLOTS, FANOUT = 2, 5
DAG = f'''
"""{FANOUT} pods at once if nothing stops them (a test DAG)."""
from datetime import datetime, timedelta

from airflow.sdk import dag

from include.remote_cluster import REMOTE_POOL
from include.remote_pod import CLUSTER_ARGS, RemotePodOperator


# Retries: Airflow 3.3.2's scheduler may fail a resumed deferred try on a stale executor event
# (apache/airflow#67287, #72716); a retry then runs that pod again, still inside the pool.
@dag(schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["test"],
     default_args={{"retries": 2, "retry_delay": timedelta(seconds=1)}})
def pool_fanout():
    for i in range({FANOUT}):
        RemotePodOperator(task_id=f"pod_{{i}}", **CLUSTER_ARGS, pool=REMOTE_POOL, name=f"fan-{{i}}",
                          image="python:3.12-slim", cmds=["python", "-c"], arguments=["print('hello')"],
                          deferrable=True, get_logs=True, on_finish_action="delete_pod")


pool_fanout()
'''


@pytest.fixture(scope="module")
def fanout_project(render, tmp_path_factory) -> Path:
    import shutil

    target = tmp_path_factory.mktemp("pool") / "remote_kpo"
    shutil.copytree(render({"cloud": "generic", "xcom": False}).path, target)
    for dag_file in (target / "dags").glob("*.py"):
        dag_file.unlink()
    (target / "dags" / "pool_fanout.py").write_text(DAG)
    return target


class Deployment:
    """Scheduler, dag processor, triggerer and execution API server on one AIRFLOW_HOME (sqlite)."""

    def __init__(self, env: dict, home: Path, plugins: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.home, self.url = home, f"http://127.0.0.1:{port}"
        self.env = env | {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(), "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins), "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        }
        self.commands = {"api-server": ["api-server", "--apps", "execution", "--host", "127.0.0.1", "--port", str(port)],
                         "dag-processor": ["dag-processor"], "triggerer": ["triggerer", "--skip-serve-logs"],
                         "scheduler": ["scheduler", "--skip-serve-logs"]}
        self.processes: dict[str, subprocess.Popen] = {}

    def airflow(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f"airflow {args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    def query(self, sql: str, *args) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            return db.execute(sql, args).fetchall()

    def __enter__(self) -> Deployment:
        for name, args in self.commands.items():
            with open(self.home / f"{name}.log", "ab") as out:
                self.processes[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env,
                                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def logs(self) -> str:
        return "".join(f"\n=== {name} ===\n{(self.home / f'{name}.log').read_text(errors='replace')[-3000:]}"
                       for name in self.commands)

    def wait_for(self, what: str, check, timeout: float = 240) -> None:
        """Poll ``check()`` until true; fail after ``timeout`` s saying what was awaited, with the logs."""
        deadline = time.monotonic() + timeout
        while not check():
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited while waiting for {what}:{self.logs()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s:{self.logs()}"
            time.sleep(1)

    def __exit__(self, *exc):
        stop_groups(self.processes.values())


def run_fanout(project: Path, work: Path) -> tuple[int, list[tuple], str]:
    """Run pool_fanout once; the most pods pending or running at once, the pool row, the run's state."""
    home = migrate(work / "airflow-home")
    with Cluster(project, home, work, double_options={"extra_run_seconds": 4}) as cluster:
        env = cluster.env()
        deployment = Deployment(env, home, cluster.project / "plugins")
        rc = cluster.rc
        # As the astro CLI leaves it: the project's pool, include_deferred off.
        deployment.airflow("pools", "set", rc.REMOTE_POOL, str(SLOTS), "made as astro dev start makes it")
        most, stop = [0], threading.Event()

        def count():
            while not stop.wait(0.1):
                # Running or about to: a finished pod left undeleted (its resumed try lost to the
                # race the DAG's retries are for) runs nothing and counts in no quota.
                running = [p for p in cluster.double.live_pods() if p["status"]["phase"] in ("Pending", "Running")]
                most[0] = max(most[0], len(running))

        counter = threading.Thread(target=count, daemon=True)
        with deployment:
            deployment.wait_for("parsed pool_fanout DAG", lambda: deployment.query(
                "select 1 from serialized_dag where dag_id = 'pool_fanout'"))
            counter.start()
            deployment.airflow("dags", "trigger", "pool_fanout")
            deployment.wait_for("finished pool_fanout run", lambda: deployment.query(
                "select 1 from dag_run where dag_id = 'pool_fanout' and state in ('success', 'failed')"), timeout=400)
            stop.set()
            counter.join(timeout=5)
            state = deployment.query("select state from dag_run where dag_id = 'pool_fanout'")[0][0]
            pool = deployment.query("select pool, slots, include_deferred from slot_pool where pool = ?", rc.REMOTE_POOL)
            tasks = deployment.query("select task_id, state, try_number from task_instance where dag_id = 'pool_fanout'")
            assert state == "success", f"{tasks}{deployment.logs()}"
        assert len(cluster.double.created_pods) >= FANOUT
        return most[0], pool, state


def test_the_pool_caps_deferred_pods(fanout_project, tmp_path):
    most, pool, _ = run_fanout(fanout_project, tmp_path)
    assert pool == [("remote_kpo", SLOTS, 1)], "the plugin turned include_deferred on and kept the slots"
    assert 1 <= most <= SLOTS, f"{most} pods running at once in a pool of {SLOTS}"


def test_without_the_plugin_the_pool_caps_nothing(fanout_project, tmp_path):
    """The count above can fail: the same run with the pool as the astro CLI leaves it."""
    import shutil

    project = tmp_path / "no-plugin" / fanout_project.name
    shutil.copytree(fanout_project, project)
    (project / "plugins" / "remote_kpo_pools.py").unlink()
    most, pool, _ = run_fanout(project, tmp_path / "run")
    assert pool == [("remote_kpo", SLOTS, 0)]
    assert most > SLOTS, f"only {most} pods at once: the pool capped deferred tasks without the plugin"
