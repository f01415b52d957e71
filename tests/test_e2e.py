"""End to end: the rendered DAGs run in real Airflow against the API double (see
tests/e2e_harness.py and tests/kube_api_double for what is real and what is simulated)."""

from __future__ import annotations

import json
import shutil

import pytest
from e2e_harness import TOKENS_MADE_HERE, Cluster, migrate


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home"))


@pytest.fixture
def cluster(project, airflow_home, tmp_path):
    cloud = project.answers["cloud"]
    if cloud == "gcp" and project.answers["pod_operator"] == "native":
        pytest.skip("GKEStartPodOperator looks the cluster up through the GKE API over gRPC (google-cloud-container), "
                    "which has no double here (its DAG, connection and preflight are checked by the project's own tests)")
    plugin = {"gcp": "gke-gcloud-auth-plugin", "azure": "kubelogin"}.get(cloud)
    if plugin and shutil.which(plugin) is None:
        pytest.skip(f"{plugin} is not on PATH on this machine")
    if cloud not in TOKENS_MADE_HERE:
        pytest.skip(f"no double of {cloud}'s token service here")
    with Cluster(project.path, airflow_home, tmp_path) as running:
        yield running


def test_preflight_reports_ready(cluster):
    result = cluster.run("check_remote_cluster")
    assert result.succeeded, result.log[-4000:]
    assert "[ok] permissions  all" in result.log
    reviews = [r["review"] for r in cluster.double.requests if "review" in r]
    assert {(r["verb"], r["resource"], r["subresource"]) for r in reviews} == set(cluster.rc.REQUIRED_PERMISSIONS)
    if cluster.google:  # GKE: the real plugin signed in with the runner's key; the cluster saw its email
        assert cluster.google.calls and all(c["status"] == 200 for c in cluster.google.calls)
        assert f"authenticated as {cluster.rc.RUNNER_IDENTITY} groups=system:authenticated" in result.log


def test_remote_kpo_runs_the_pod(cluster):
    result = cluster.run("remote_kpo")
    assert result.succeeded, result.log[-6000:]
    (pod,) = cluster.double.created_pods
    assert pod["metadata"]["namespace"] == cluster.rc.REMOTE_NAMESPACE
    labels = pod["metadata"]["labels"]
    assert labels["airflow_kpo_in_cluster"] == "False"
    assert labels.items() >= cluster.rc.POD_LABELS.items(), "the project's labels (the janitor finds pods by them)"
    assert labels["app.kubernetes.io/part-of"] == cluster.project.name.replace("_", "-")
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert base["image"] == "python:3.12-slim"
    assert base["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The namespace warns on "restricted" (k8s/namespace.yaml): every container of the pod, the XCom
    # sidecar included, meets it, so the API server answered without a Pod Security warning.
    assert cluster.double.pod_security_warnings == [], cluster.double.pod_security_warnings
    assert "hello from" in result.log and "on the remote cluster" in result.log, "pod log reached the task log"
    assert cluster.double.live_pods() == [], "the pod is deleted at the end"
    assert "running trigger in line" in result.log and "Trigger completed" in result.log, "deferred and resumed"
    assert ("airflow-xcom-sidecar" in json.dumps(pod)) == cluster.rc.XCOM_ENABLED
    if cluster.rc.XCOM_ENABLED:
        assert "the remote pod ran on" in result.log, "the XCom reached the downstream task"
    statuses = {r["status"] for r in cluster.double.requests}
    assert statuses <= {200, 201, 101}, statuses


def test_eks_chain_uses_the_trust_policy(render, airflow_home, tmp_path):
    project = render({"cloud": "aws", "xcom": False})
    with Cluster(project.path, airflow_home, tmp_path) as running:
        result = running.run("check_remote_cluster")
        assert result.succeeded, result.log[-3000:]
        assert running.sts.calls and all(c["ExternalId"] == json.loads(
            (project.path / "aws/trust-policy.json").read_text())["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]
            for c in running.sts.calls)
        assert f"authenticated as arn:aws:sts::{project.answers['aws_account_id']}:assumed-role/" in result.log
