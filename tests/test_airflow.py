"""Every rendered DAG loads in the real Airflow 3.3 with the real providers, and every
rendered project's own test suite passes.

Each project runs in its own subprocess: the projects share module names (`include`,
`remote_kpo`), which one interpreter could not hold side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import airflow_env

INSPECT = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
tasks = {}
for dag in bag.dags.values():
    for t in dag.tasks:
        if t.task_type == "KubernetesPodOperator":
            tasks[f"{dag.dag_id}.{t.task_id}"] = {
                "conn": t.kubernetes_conn_id, "namespace": t.namespace, "in_cluster": t.in_cluster,
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
    assert found["dags"] == ["check_remote_cluster", "remote_kpo"]
    (pod,) = found["pods"].values()
    answers = project.answers
    assert pod == {
        "conn": answers["kubernetes_conn_id"], "namespace": answers["namespace"], "in_cluster": False,
        "deferrable": True, "xcom": answers["xcom"], "pool": "remote_kpo", "get_logs": True,
        "startup": 900, "on_finish": "delete_pod",
    }


def test_rendered_project_tests_pass(project, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error::DeprecationWarning:dags",
         "tests", ".astro/test_dag_integrity_default.py"],
        cwd=project.path, capture_output=True, text=True, env=airflow_env(project.path, tmp_path), timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and " failed" not in summary, summary


@pytest.mark.parametrize("cloud", ["aws"])
def test_eks_token_plugin_makes_a_real_presigned_token(render, cloud, tmp_path, monkeypatch):
    """The rendered exec plugin, run for real with fake credentials and no role to assume."""
    import base64
    from urllib.parse import parse_qs, urlparse

    project = render({"cloud": cloud, "xcom": True})
    env = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "KPO_EKS_ROLE_ARN": "",
           "PATH": "/usr/bin:/bin", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "KUBERNETES_EXEC_INFO": json.dumps({"apiVersion": "client.authentication.k8s.io/v1"})}
    done = subprocess.run([sys.executable, str(project.path / "include/kube_auth/eks_token.py"),
                           "--cluster-name", "gpu-cluster", "--region", "eu-west-1", "--role-arn", "arn:aws:iam::1:role/x"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    credential = json.loads(done.stdout)
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    token = credential["status"]["token"]
    assert token.startswith("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(token[len("k8s-aws-v1."):] + "==").decode()
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    assert parsed.netloc == "sts.eu-west-1.amazonaws.com"
    assert query["Action"] == ["GetCallerIdentity"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0].split(";")
    assert query["X-Amz-Credential"][0].startswith("AKIAEXAMPLE/")
