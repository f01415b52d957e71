"""Multi-cluster projects hold what their image needs: every primary cloud x every added cloud.

For each of the 16 pairs a project rendered with the users' own answers (conftest.CUSTOM: no
default name, namespace, connection id or cloud id) takes one cluster of the other (or the same)
cloud, also with non-default answers, through the real add command (`cookiecutter <template>
--directory cluster`), which also merges the providers the cluster needs into requirements.txt.
Then every DAG of the project loads in real Airflow in a subprocess that sees only the image's
packages (tests/image_closure.py: the runtime and requirements.txt), with no import error, and
the cluster registry names both clusters; a kubeconfig exec plugin written in Python (EKS's
eks_token.py, which needs boto3 only when it makes a token) runs in that image too.
pod_operator and gpu_node_group take each of their values on both sides (primary: aws native with
GPU, gcp kubernetes with GPU; added aws and gcp clusters: the four combinations across the four
primaries).

Why one subprocess per project: starting Airflow is most of its ~10 s, but the gate must be in
place before Airflow starts (DagBag's import initialises the providers manager, which would then
list providers the image lacks), so projects with different requirements cannot share a process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG, CUSTOM, airflow_env
from e2e_harness import add_cluster, template_copy

CLOUDS = ["aws", "gcp", "azure", "generic"]
PRIMARIES = {
    "aws": {"cloud": "aws", "xcom": False, "pod_operator": "native", "gpu_node_group": True, **CUSTOM},
    "gcp": {"cloud": "gcp", "xcom": True, "pod_operator": "kubernetes", "gpu_node_group": True, **CUSTOM},
    "azure": {"cloud": "azure", "xcom": True, **CUSTOM},
    "generic": {"cloud": "generic", "xcom": False, **CUSTOM},
}
# Added aws/gcp clusters: (pod_operator, gpu_node_group) by primary, each combination once per cloud.
OPTIONS = {"aws": ("kubernetes", True), "gcp": ("native", False), "azure": ("kubernetes", False), "generic": ("native", True)}
# The added cluster's own cloud answers: not the template's examples, not the primary's.
ADDED_CLOUD_ANSWERS = {
    "aws_account_id": "345678901234",
    "aws_region": "ap-southeast-2",
    "aws_astro_workload_identity_arn": "arn:aws:iam::777788889999:role/astro-batch",
    "gcp_project_id": "batch-platform-01",
    "gcp_location": "asia-east1",
    "gcp_service_account_email": "astro-batch@batch-platform-01.iam.gserviceaccount.com",
    "azure_subscription_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
    "azure_resource_group": "rg-batch",
    "azure_tenant_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
    "azure_identity_client_id": "3c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f",
    "azure_identity_object_id": "4d5e6f7a-8b9c-4d0e-9f2a-3b4c5d6e7f80",
}
PAIRS = [(p, a) for p in CLOUDS for a in CLOUDS]

INSPECT = r"""
import json, os, subprocess, sys, tempfile
from airflow.dag_processing.dagbag import DagBag
import clusters

bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": bag.import_errors, "dags": sorted(bag.dag_ids), "names": clusters.names(), "operators": {}}
for name in clusters.names():  # the class each cluster's pods start with, and what it derives from
    try:
        out["operators"][name] = [c.__name__ for c in clusters.cluster(name).operator.__mro__]
    except ImportError as err:
        out["operators"][name] = f"{type(err).__name__}: {err}"
# A kubeconfig exec plugin written in Python (EKS: eks_token.py) runs in the image too, but only when
# a token is needed, never while DAGs load: run it as the kubeconfig says, without AWS credentials.
out["plugins"] = {}
for name in clusters.names():
    plugin = clusters.cluster(name).settings.EXEC_PLUGIN
    if plugin and plugin["command"] == "python":
        args = [a.replace("/usr/local/airflow", os.getcwd()) for a in plugin["args"]]
        env = dict(os.environ, HOME=tempfile.mkdtemp(), AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                   AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)
        out["plugins"][name] = done.stdout + done.stderr
tasks = bag.dags.get("remote_kpo_clusters")
out["pods"] = sorted(t.task_id for t in tasks.tasks) if tasks else []
print("INSPECTED", json.dumps(out))
"""


def added_answers(primary: str, cloud: str) -> dict:
    cluster_id = f"{cloud}-beside-{primary}"
    pkg = cluster_id.replace("-", "_")
    answers = {"cluster_id": cluster_id, "cloud": cloud, "cluster_name": f"{cloud}-batch-{primary}",
               "namespace": f"jobs-{cluster_id}", "kubernetes_conn_id": f"conn_{pkg}",
               "xcom": CLOUDS.index(primary) % 2 == 0, **ADDED_CLOUD_ANSWERS}
    if CONFIG["_clouds"][cloud]["native"]:
        answers["pod_operator"], answers["gpu_node_group"] = OPTIONS[primary]
    return answers


def test_every_option_value_occurs_on_both_sides():
    primaries = list(PRIMARIES.values())
    added = [added_answers(p, a) for p, a in PAIRS]
    for side in (primaries, added):
        assert {a.get("pod_operator", "kubernetes") for a in side} == {"kubernetes", "native"}
        assert {a.get("gpu_node_group", False) for a in side} == {True, False}
        assert {a["xcom"] for a in side} == {True, False}
    for cloud in ("aws", "gcp"):  # every combination of the two on an added aws and gcp cluster
        combos = {(a["pod_operator"], a["gpu_node_group"]) for a in added if a["cloud"] == cloud}
        assert combos == {(o, g) for o in ("kubernetes", "native") for g in (True, False)}


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    return template_copy(tmp_path_factory.mktemp("closure-template") / "template")


def multi_cluster(render, template: Path, work: Path, primary: str, added: str) -> tuple[Path, dict]:
    project = work / "project" / PRIMARIES[primary]["project_slug"]
    shutil.copytree(render(PRIMARIES[primary]).path, project)
    answers = added_answers(primary, added)
    add_cluster(project, template, answers)
    return project, answers


def inspect(project: Path, home: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", INSPECT, str(project / "dags")], capture_output=True, text=True,
                          env=airflow_env(project, home), cwd=project, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("INSPECTED "))
    return json.loads(line.removeprefix("INSPECTED "))


@pytest.mark.parametrize("primary,added", PAIRS, ids=[f"{p}+{a}" for p, a in PAIRS])
def test_every_dag_loads_in_the_image(render, template, tmp_path, primary, added):
    project, answers = multi_cluster(render, template, tmp_path, primary, added)
    found = inspect(project, tmp_path / "home")
    assert found["errors"] == {}, found["errors"]
    names = [CUSTOM["cluster_name"], answers["cluster_id"]]
    assert found["names"] == names, "the registry names the primary, then the added cluster"
    pkg = answers["cluster_id"].replace("-", "_")
    any_xcom = PRIMARIES[primary]["xcom"] or answers["xcom"]
    assert found["pods"] == sorted(["hello_ml_prod_eu", f"hello_{pkg}"] + (["use_results"] if any_xcom else [])), found
    expected = {"check_remote_cluster", "remote_kpo", "remote_pod_janitor",
                "check_remote_clusters", "remote_kpo_clusters", "remote_pod_janitor_clusters"}
    expected |= {"remote_kpo_gpu"} if PRIMARIES[primary].get("gpu_node_group") else set()
    expected |= {f"remote_kpo_gpu_{pkg}"} if answers.get("gpu_node_group") else set()
    assert set(found["dags"]) == expected
    native = {"aws": "EksPodOperator", "gcp": "GKEStartPodOperator"}
    for name, side in zip(names, (PRIMARIES[primary], answers), strict=True):
        mro = found["operators"][name]
        assert mro[0] == "RemotePodOperator" and "KubernetesPodOperator" in mro, mro
        wanted = native[side["cloud"]] if side.get("pod_operator") == "native" else None
        assert [c for c in mro if c in native.values()] == ([wanted] if wanted else []), (name, mro)
        python_plugin = side["cloud"] == "aws" and side.get("pod_operator", "kubernetes") == "kubernetes"
        assert (name in found["plugins"]) == python_plugin, found["plugins"]
        if python_plugin:  # it got as far as asking AWS: every module it needs is in the image
            assert "cannot make a token" in found["plugins"][name] and "No module named" not in found["plugins"][name], \
                found["plugins"][name]


def test_the_gate_catches_a_provider_the_sync_forgot(render, template, tmp_path):
    """A generic project with an added GKE cluster on GKEStartPodOperator: the add merged the google
    provider into requirements.txt; without that block the image lacks it and the DAGs that start
    the added cluster's pods do not load."""
    project, answers = multi_cluster(render, template, tmp_path, "generic", "gcp")
    assert answers["pod_operator"] == "native"
    requirements = project / "requirements.txt"
    text = requirements.read_text()
    start, end = text.index("# >>> clusters/manage.py sync"), text.index("# <<< clusters/manage.py sync <<<\n")
    assert CONFIG["_providers"]["google"] in text[start:end]
    requirements.write_text(text[:start] + text[end + len("# <<< clusters/manage.py sync <<<\n"):])
    assert CONFIG["_providers"]["google"] not in requirements.read_text()
    found = inspect(project, tmp_path / "home")
    errors = {Path(k).name: v for k, v in found["errors"].items()}
    assert "remote_kpo_clusters.py" in errors, errors
    assert all("No module named 'airflow.providers.google'" in v for v in errors.values()), errors
    assert "No module named 'airflow.providers.google'" in found["operators"][answers["cluster_id"]]
