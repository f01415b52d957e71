"""A project with added clusters still passes its own test suite, as `astro dev pytest` runs it.

The first new-user review of multi-cluster projects found the project's own
tests/test_remote_setup.py failing right after a documented add (it took the added cluster's pod
tasks for the project's own). Real cookiecutter (the add command as the README gives it), real
Airflow 3.3, only the image's packages importable (the project's requirements.txt, as the sync
left it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, airflow_env
from cookiecutter.main import cookiecutter
from e2e_harness import add_cluster

ADDED = [  # a GKE cluster with the GPU DAG and a generic one: other clouds, other names and namespaces
    {"cluster_id": "gke-gpu", "cloud": "gcp", "gpu_node_group": True, "namespace": "ml-gpu",
     "gcp_project_id": "ml-prod-eu", "gcp_location": "europe-west4"},
    {"cluster_id": "onprem", "cloud": "generic", "namespace": "batch-jobs", "xcom": False},
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("own-tests")
    path = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(out),
                             extra_context={"cloud": "aws", "project_name": "Batch Jobs", "namespace": "cpu-batch"}))
    for answers in ADDED:
        add_cluster(path, ROOT, answers)
    return path


def run_project_tests(project, tmp_path) -> subprocess.CompletedProcess:
    env = airflow_env(project, tmp_path)
    del env["AIRFLOW__CORE__DAGS_FOLDER"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests", ".astro/test_dag_integrity_default.py"],
        cwd=project, capture_output=True, text=True, env=env, timeout=900)


def test_the_projects_own_tests_pass_with_added_clusters(project, tmp_path):
    done = run_project_tests(project, tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # The rules of pod tasks held for every DAG, the added clusters' too, each on its own cluster.
    assert "PASSED tests/test_remote_setup.py::test_every_pod_task_follows_the_rules" in done.stdout
    # Every DAG file, the added clusters' too, had its tags and retries checked.
    dags = len(list((project / "dags").glob("*.py")))
    assert dags == 3 + 3 + 1  # the project's own, the three of every multi-cluster project, the GKE GPU DAG
    for check in ("test_dag_tags", "test_dag_retries"):
        assert done.stdout.count(f"PASSED tests/dags/test_dag_example.py::{check}[") == dags, done.stdout[-3000:]
