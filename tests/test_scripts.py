"""scripts/write_connection.py against recording stand-ins for the cloud CLIs and kubectl.

No cloud or cluster is reachable here, so tiny fake `aws`, `gcloud`, `az` and `kubectl`
executables answer with the JSON shapes the real ones print and record how they were called.
The script itself, the files it writes and their permissions are real.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl"
KUBECONFIG_VIEW = {"clusters": [{"name": "c", "cluster": {"server": "https://198.51.100.7:6443",
                                                          "certificate-authority-data": CA}}]}
ANSWERS = {
    "aws": {"cluster": {"endpoint": "https://ABC.gr7.us-east-1.eks.amazonaws.com", "certificateAuthority": {"data": CA}}},
    "gcp": {"endpoint": "203.0.113.5", "masterAuth": {"clusterCaCertificate": CA}},
    "azure": {"fqdn": "gpu-cluster-abc.hcp.eastus.azmk8s.io"},
}
EXPECTED_SERVER = {
    "aws": "https://ABC.gr7.us-east-1.eks.amazonaws.com",
    "gcp": "https://203.0.113.5",
    "azure": "https://gpu-cluster-abc.hcp.eastus.azmk8s.io:443",
    "generic": "https://198.51.100.7:6443",
}
FAKE = """#!{python}
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv) + "\\n")
args = sys.argv[1:]
if "get-credentials" in args:
    open(args[args.index("--file") + 1], "w").write("fake kubeconfig")
elif args[:1] == ["create"] or "token" in args:
    print({token!r})
elif "view" in args:
    print(json.dumps({view}))
else:
    print(json.dumps({answer}))
"""


@pytest.fixture
def fake_clis(tmp_path):
    def install(cloud: str) -> Path:
        bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
        bin_dir.mkdir(exist_ok=True)
        for name in ("aws", "gcloud", "az", "kubectl"):
            path = bin_dir / name
            path.write_text(FAKE.format(python=sys.executable, log=str(log), token=TOKEN,
                                        view=KUBECONFIG_VIEW, answer=ANSWERS.get(cloud, {})))
            path.chmod(0o755)
        return bin_dir
    return install


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure", "generic"])
def test_write_connection_fills_both_forms(render, fake_clis, tmp_path, cloud):
    project = tmp_path / "project"
    shutil.copytree(render({"cloud": cloud, "xcom": True}).path, project)
    env = dict(os.environ, PATH=f"{fake_clis(cloud)}{os.pathsep}{os.environ['PATH']}")
    args = ["--kubeconfig", "admin.kubeconfig"] if cloud == "generic" else []
    done = subprocess.run([sys.executable, "scripts/write_connection.py", *args], cwd=project,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr, "the token must never be printed"

    settings = yaml.safe_load((project / "airflow_settings.yaml").read_text())["airflow"]
    (connection,) = settings["connections"]
    kube_config = connection["conn_extra"]["kube_config"]
    cluster = kube_config["clusters"][0]["cluster"]
    assert cluster == {"server": EXPECTED_SERVER[cloud], "certificate-authority-data": CA}
    assert settings["pools"][0]["pool_name"] == "remote_kpo", "the rest of the file is kept"
    user = kube_config["users"][0]["user"]
    assert (user.get("token") == TOKEN) == (cloud == "generic")

    env_file = project / "connection.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    calls = [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]
    if cloud == "generic":
        create = next(c for c in calls if "create" in c)
        assert create[create.index("token") + 1] == "airflow-kpo-runner" and "--duration" in create

    # Running it again replaces the block instead of adding a second connection.
    subprocess.run([sys.executable, "scripts/write_connection.py", *args], cwd=project, env=env, check=True,
                   capture_output=True)
    assert len(yaml.safe_load((project / "airflow_settings.yaml").read_text())["airflow"]["connections"]) == 1


@pytest.mark.parametrize("cloud", ["aws", "generic"])
def test_dry_run_changes_nothing(render, fake_clis, tmp_path, cloud):
    project = tmp_path / "project"
    shutil.copytree(render({"cloud": cloud, "xcom": False}).path, project)
    before = (project / "airflow_settings.yaml").read_text()
    env = dict(os.environ, PATH=f"{fake_clis(cloud)}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run([sys.executable, "scripts/write_connection.py", "--dry-run"], cwd=project,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "would run:" in done.stdout
    assert (project / "airflow_settings.yaml").read_text() == before
    assert not (project / "connection.env").exists()
    assert not (tmp_path / "calls.log").exists(), "dry run must call no CLI"


def test_the_files_holding_a_token_are_private_on_every_write_and_never_written_through_a_link(render, fake_clis,
                                                                                            tmp_path):
    project = tmp_path / "project"
    shutil.copytree(render({"cloud": "generic", "xcom": False}).path, project)
    env = dict(os.environ, PATH=f"{fake_clis('generic')}{os.pathsep}{os.environ['PATH']}")
    command = [sys.executable, "scripts/write_connection.py", "--kubeconfig", "admin.kubeconfig"]
    (project / "connection.env").write_text("# made by hand\n")
    for name in ("connection.env", "airflow_settings.yaml"):
        (project / name).chmod(0o644)  # e.g. made by hand or by an older version of this script
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    for name in ("connection.env", "airflow_settings.yaml"):
        assert stat.S_IMODE((project / name).stat().st_mode) == 0o600, name
        assert TOKEN in (project / name).read_text()
    assert not list(project.glob(".*.tmp")), "no temporary file left behind"

    elsewhere = tmp_path / "shared-folder" / "connection.env"
    elsewhere.parent.mkdir()
    elsewhere.write_text("# someone else's file\n")
    (project / "connection.env").unlink()
    (project / "connection.env").symlink_to(elsewhere)
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1].startswith(
        "ERROR: connection.env is a symbolic link"), done.stderr
    assert elsewhere.read_text() == "# someone else's file\n", "nothing written through the link"
