"""Every rendered DAG loads in the real Airflow 3.3 with the real providers, and every
rendered project's own test suite passes.

Each project runs in its own subprocess: the projects share module names (`include`,
`remote_kpo`), which one interpreter could not hold side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import airflow_env

INSPECT = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
tasks = {}
for dag in bag.dags.values():
    for t in dag.tasks:
        if isinstance(t, KubernetesPodOperator):
            tasks[f"{dag.dag_id}.{t.task_id}"] = {
                "class": [c.__name__ for c in type(t).__mro__],
                "conn": getattr(t, "aws_conn_id", None) or getattr(t, "gcp_conn_id", None) or t.kubernetes_conn_id,
                "namespace": t.namespace, "in_cluster": t.in_cluster,
                "deferrable": t.deferrable, "xcom": t.do_xcom_push, "pool": t.pool,
                "get_logs": t.get_logs, "startup": t.startup_timeout_seconds,
                "on_finish": t.on_finish_action.value,
            }
print(json.dumps({"errors": bag.import_errors, "dags": sorted(bag.dag_ids), "pods": tasks}))
"""


def test_dagbag_loads_with_expected_operators(project, tmp_path):
    done = subprocess.run([sys.executable, "-c", INSPECT, str(project.path / "dags")], capture_output=True,
                          text=True, env=airflow_env(project.path, tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    answers = project.answers
    gpu = answers.get("gpu_node_group", False)
    assert found["dags"] == ["check_remote_cluster", "remote_kpo", *(["remote_kpo_gpu"] if gpu else []),
                             "remote_pod_janitor"]
    assert set(found["pods"]) == {"remote_kpo.hello_remote", *(["remote_kpo_gpu.gpu_pod"] if gpu else [])}
    pod = found["pods"].pop("remote_kpo.hello_remote")
    native = answers.get("pod_operator") == "native"
    expected_class = {"aws": "EksPodOperator", "gcp": "GKEStartPodOperator"}[answers["cloud"]] if native else \
        "KubernetesPodOperator"
    assert expected_class in pod.pop("class") and "KeepFinishedPodResult" in found["pods"].get(
        "remote_kpo_gpu.gpu_pod", {"class": ["KeepFinishedPodResult"]})["class"]
    assert pod == {
        "conn": answers["kubernetes_conn_id"], "namespace": answers["namespace"], "in_cluster": False,
        "deferrable": True, "xcom": answers["xcom"], "pool": "remote_kpo", "get_logs": True,
        "startup": 900, "on_finish": "delete_pod",
    }
    if gpu:  # the GPU pod: same cluster, waits for its node, no XCom, retried once on the same node group
        gpu_pod = found["pods"]["remote_kpo_gpu.gpu_pod"]
        assert gpu_pod["namespace"] == answers["namespace"] and gpu_pod["deferrable"] is True
        assert gpu_pod["startup"] >= 1200 and gpu_pod["xcom"] is False


def test_rendered_project_tests_pass(project, tmp_path):
    """`pytest tests` as a user runs it outside the container: no DAGS_FOLDER set, only the image's
    packages importable. Nothing may skip for want of DAGs (it once did, on "empty parameter set")."""
    env = airflow_env(project.path, tmp_path)
    del env["AIRFLOW__CORE__DAGS_FOLDER"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-W", "error::DeprecationWarning:dags",
         "tests", ".astro/test_dag_integrity_default.py"],
        cwd=project.path, capture_output=True, text=True, env=env, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and " failed" not in summary, summary
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert not [s for s in skips if "empty parameter set" in s or "test_dag" in s], skips
    # Each DAG file's tag and retry checks ran (they once skipped on "empty parameter set").
    dags = len(list((project.path / "dags").glob("*.py")))
    for check in ("test_dag_tags", "test_dag_retries"):
        assert done.stdout.count(f"PASSED tests/dags/test_dag_example.py::{check}[") == dags, done.stdout[-3000:]
