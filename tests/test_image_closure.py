"""The image gate (tests/image_closure.py) says no: what requirements.txt lacks does not import.

The gate stands in for the image, which cannot be built here (no registry). These tests show
it refuses what the image would lack, lets through what it would hold, and catches the bug it
was written for: a GKE GPU project whose requirements.txt forgot the google provider.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import CONFIG, airflow_env
from image_closure import GATE_DIR, gated_env

PROBE = r"""
import importlib, importlib.metadata as md, importlib.util, importlib_metadata, json, sys
result = {}
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
        result[module] = "ok"
    except ModuleNotFoundError as err:
        result[module] = str(err)
# Airflow reads entry points through the importlib_metadata backport: both must agree.
for name, lib in (("google metadata", md), ("google metadata (backport)", importlib_metadata)):
    try:
        lib.version("apache-airflow-providers-google")
        result[name] = "visible"
    except lib.PackageNotFoundError:
        result[name] = "hidden"
result["find_spec"] = "found" if importlib.util.find_spec("google.cloud.container_v1") else "none"
print(json.dumps(result))
"""
MODULES = ["airflow.providers.cncf.kubernetes.operators.pod", "yaml", "google.cloud.container_v1",
           "airflow.providers.google.cloud.hooks.kubernetes_engine", "airflow.providers.amazon.aws.hooks.eks"]


def probe(tmp_path: Path, requirements: str | None) -> dict:
    env = {"PATH": "/usr/bin:/bin"}
    if requirements is not None:
        (tmp_path / "requirements.txt").write_text(requirements)
        env = gated_env(env, tmp_path / "requirements.txt")
    done = subprocess.run([sys.executable, "-c", PROBE, *MODULES], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_without_the_gate_the_venv_holds_every_provider(tmp_path):
    """Positive control: the venv itself has them all, so a refusal below is the gate's."""
    found = probe(tmp_path, None)
    assert set(found.values()) == {"ok", "visible", "found"}, found


def test_gate_refuses_what_requirements_lack(tmp_path):
    found = probe(tmp_path, CONFIG["_providers"]["cncf_kubernetes"] + "\n")
    assert found["airflow.providers.cncf.kubernetes.operators.pod"] == "ok" and found["yaml"] == "ok"
    for module in MODULES[2:]:  # as for a package never installed
        assert found[module].startswith("No module named"), found
    assert found["find_spec"] == "none"
    assert found["google metadata"] == found["google metadata (backport)"] == "hidden", \
        "Airflow's ProvidersManager must not see it either"


def test_gate_lets_through_what_requirements_add(tmp_path):
    providers = CONFIG["_providers"]
    found = probe(tmp_path, f"{providers['cncf_kubernetes']}\n{providers['google']}\n")
    assert found["google.cloud.container_v1"] == "ok" and found["google metadata (backport)"] == "visible"
    assert found["airflow.providers.amazon.aws.hooks.eks"].startswith("No module named")


def test_gate_catches_a_gpu_project_missing_its_provider(render, tmp_path):
    """The defect this gate was written for: remote_kpo_gpu.py imports the google provider."""
    import shutil

    project = render({"cloud": "gcp", "xcom": False, "gpu_node_group": True})
    copy = tmp_path / project.path.name
    shutil.copytree(project.path, copy)
    requirements = copy / "requirements.txt"
    line = CONFIG["_providers"]["google"]
    assert line in requirements.read_text()
    requirements.write_text(requirements.read_text().replace(line, ""))
    script = ("from airflow.dag_processing.dagbag import DagBag; import json, sys; "
              "print(json.dumps(DagBag(sys.argv[1]).import_errors))")
    done = subprocess.run([sys.executable, "-c", script, str(copy / "dags")], capture_output=True, text=True,
                          env=airflow_env(copy, tmp_path / "home"), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = {Path(k).name: v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    assert list(errors) == ["remote_kpo_gpu.py"], errors
    assert "No module named 'airflow.providers.google'" in errors["remote_kpo_gpu.py"], errors


def test_e2e_runs_are_gated(render, tmp_path):
    """The end-to-end DAG processes (and the exec plugins they start) see only the image too."""
    from e2e_harness import Cluster

    project = render({"cloud": "generic", "xcom": True})
    cluster = Cluster(project.path, tmp_path / "home", tmp_path)
    cluster.connections = {}
    env = cluster.env()
    assert env["KPO_IMAGE_REQUIREMENTS"] == str(cluster.project / "requirements.txt")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(GATE_DIR)
