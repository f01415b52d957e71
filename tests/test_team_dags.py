"""What a team does next: add its own DAGs to the rendered project and run the project's own tests.

The team's DAGs (tests/team_dags/) are written as the READMEs show: sync and deferrable pod
tasks, with and without resources, pushing an XCom or not, on RemotePodOperator or the provider's
KubernetesPodOperator with CLUSTER_ARGS, and in a project with an added cluster, RemotePod(<name>)
by name. The project's suite (`pytest tests`, as `astro dev pytest` runs it, only the image's
packages importable) passes with them; a DAG breaking a real rule fails it with one line per
broken task naming the rule. Real cookiecutter, the real add command, Airflow 3.3.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CUSTOM, ROOT, airflow_env, check_keys
from cookiecutter.main import cookiecutter
from e2e_harness import add_cluster

TEAM_DAGS = Path(__file__).resolve().parent / "team_dags"
ONPREM = {"cluster_id": "onprem", "cloud": "generic", "namespace": "batch-jobs", "xcom": False}


def run_project_tests(project: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = airflow_env(project, tmp_path / "airflow-home")
    del env["AIRFLOW__CORE__DAGS_FOLDER"]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests"],
                          cwd=project, capture_output=True, text=True, env=env, timeout=900)


def make(tmp_path: Path, answers: dict, dags: list[str], added: dict | None = None) -> Path:
    project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(tmp_path / "out"),
                                extra_context=check_keys(dict(answers))))
    if added:
        add_cluster(project, ROOT, added)
    for name in dags:
        shutil.copy(TEAM_DAGS / name, project / "dags" / name)
    return project


@pytest.mark.parametrize("answers", [
    pytest.param({"cloud": "aws", "xcom": True, **CUSTOM}, id="aws-xcom-custom"),
    pytest.param({"cloud": "gcp", "xcom": False, **CUSTOM}, id="gcp-noxcom-custom"),
])
def test_a_teams_own_dags_pass_the_projects_tests(tmp_path, answers):
    project = make(tmp_path, answers, ["team_etl.py"])
    done = run_project_tests(project, tmp_path)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert "PASSED tests/test_remote_setup.py::test_every_pod_task_follows_the_rules" in done.stdout
    assert "PASSED tests/test_remote_setup.py::test_the_dags_pods_fit_in_the_quota" in done.stdout


def test_a_teams_dags_by_cluster_name_pass_in_a_multi_cluster_project(tmp_path):
    project = make(tmp_path, {"cloud": "aws", "xcom": True}, ["team_etl.py", "team_clusters.py"], ONPREM)
    done = run_project_tests(project, tmp_path)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert "PASSED tests/test_remote_setup.py::test_every_pod_task_follows_the_rules" in done.stdout


def test_a_dag_breaking_a_rule_fails_naming_it(tmp_path):
    project = make(tmp_path, {"cloud": "aws", "xcom": True}, ["team_broken.py"], ONPREM)
    done = run_project_tests(project, tmp_path)
    assert done.returncode == 1, done.stdout[-5000:]
    assert "FAILED tests/test_remote_setup.py::test_every_pod_task_follows_the_rules" in done.stdout
    expected = {"other_namespace": "namespace:", "in_cluster_unset": "in_cluster:", "default_pool": "pool:",
                "no_deadline": "deadline:", "no_cluster_args": "connection:", "xcom_without_exec": "do_xcom_push:"}
    for task_id, rule in expected.items():
        lines = [line for line in done.stdout.splitlines() if f"team_broken.{task_id}: " in line]
        assert lines and all(rule in line for line in lines), (task_id, rule, lines or done.stdout[-4000:])
    # The rest of the suite is not dragged down: only the rules test fails.
    assert done.stdout.count("FAILED ") == 1, done.stdout[-4000:]
