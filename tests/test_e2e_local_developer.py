"""The printed steps, as a developer lives them: `scripts/setup_remote.sh --local-developer`
admits the signed-in identity, and then `astro dev start`'s preflight, signed in as that
identity, is green against the API double. Without that step it is not.

SIMULATED: the cloud CLIs and kubectl of the setup run (tests/cloud_cli_double, whose model
keeps what the script applied: the GKE RoleBinding, the EKS trust policy), the cluster
(tests/kube_api_double), Google's token endpoint and STS. REAL: the setup script and what it
writes, the gke-gcloud-auth-plugin and the EKS token plugin, Airflow and the rendered DAGs.
AKS: kubelogin cannot be had here (its binding is shown in test_setup_scripts); generic: the
connection's token is the same locally and deployed.
"""

from __future__ import annotations

import shutil

import pytest
from conftest import CUSTOM
from e2e_harness import Cluster, migrate
from test_setup_scripts import GOOGLE_ACCOUNT, LOGIN, ROLE, developer_rolebindings, setup  # noqa: F401 (setup: fixture)

GKE_PLUGIN = pytest.mark.skipif(shutil.which("gke-gcloud-auth-plugin") is None,
                                reason="gke-gcloud-auth-plugin is not on PATH on this machine")


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home"))


@GKE_PLUGIN
def test_gke_developer_admitted_by_setup_passes_the_preflight(setup, airflow_home, tmp_path):  # noqa: F811
    s = setup("gcp", xcom=False)
    done = s.run("--local-developer")
    assert done.returncode == 0, done.stdout + done.stderr
    (binding,) = developer_rolebindings(s.double.state)
    assert [subject["name"] for subject in binding["subjects"]] == [GOOGLE_ACCOUNT]

    with Cluster(s.project, airflow_home, tmp_path / "admitted", extra_bindings=[binding],
                 google_identity=GOOGLE_ACCOUNT) as cluster:
        result = cluster.run("check_remote_cluster")
        assert result.succeeded, result.log[-4000:]
        assert f"authenticated as {GOOGLE_ACCOUNT}" in result.log
        assert cluster.rc.GCP_PROJECT_ID == CUSTOM["gcp_project_id"]

    with Cluster(s.project, airflow_home, tmp_path / "not-admitted", google_identity=GOOGLE_ACCOUNT) as cluster:
        result = cluster.run("check_remote_cluster")
        assert result.state == "failed", "without the developer's RoleBinding the preflight must fail"
        assert f"authenticated as {GOOGLE_ACCOUNT}" in result.log


def test_eks_developer_trusted_by_setup_passes_the_preflight(setup, airflow_home, tmp_path):  # noqa: F811
    """An SSO session assumes the runner role through the trust statement the script added."""
    s = setup("aws", xcom=False)
    done = s.run("--local-developer")
    assert done.returncode == 0, done.stdout + done.stderr
    trust = s.double.state["aws"]["roles"][ROLE]
    session = LOGIN["aws"]["Arn"]  # arn:aws:sts::...:assumed-role/AWSReservedSSO_.../jane

    with Cluster(s.project, airflow_home, tmp_path / "trusted", trust_policy=trust, aws_caller=session) as cluster:
        result = cluster.run("check_remote_cluster")
        assert result.succeeded, result.log[-4000:]
        assert any(c["caller"] and c.get("Action") == "AssumeRole" for c in cluster.sts.calls)

    with Cluster(s.project, airflow_home, tmp_path / "not-trusted", aws_caller=session) as cluster:
        result = cluster.run("check_remote_cluster")
        assert result.state == "failed", "with the rendered trust policy alone the developer is refused"
        assert "not trusted by" in result.log
