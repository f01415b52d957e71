"""The namespace's limits end to end: the rendered ResourceQuota and LimitRange loaded into the
API double (tests/kube_api_double/quota.py admits pods as the API server does), the rendered
DAGs run in real Airflow (tests/e2e_harness.py says what is real and what is simulated).
Generic cluster with XCom, so that the XCom sidecar is in the pod: without resources from the
connection it is the provider's (no memory limit), and the LimitRange's default is what lets
the quota admit it."""

from __future__ import annotations

import json

import pytest
import yaml
from e2e_harness import Cluster, migrate, variant

GENERIC_XCOM = {"cloud": "generic", "xcom": True}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home"))


def manifest(project, name: str) -> dict:
    return yaml.safe_load((project.path / "k8s" / f"{name}.yaml").read_text())


def reads(cluster: Cluster) -> set[tuple]:
    return {(r["verb"], r["resource"], r["name"], r["status"]) for r in cluster.double.requests
            if r.get("resource") in ("resourcequotas", "limitranges")}


def sidecar_settings(cluster: Cluster) -> dict | None:
    """The XCom sidecar's resources the connection sets (the operator uses them), if any."""
    configured = json.loads(cluster.connection)["extra"].get("xcom_sidecar_container_resources")
    return json.loads(configured) if configured else None


def test_preflight_reports_the_quota_use(render, airflow_home, tmp_path):
    project = render(GENERIC_XCOM)
    with Cluster(project.path, airflow_home, tmp_path) as cluster:
        result = cluster.run("check_remote_cluster")
        assert result.succeeded, result.log[-4000:]
        own = sidecar_settings(cluster)  # else 256Mi: the LimitRange's default
        sidecar_limit = int(own["limits"]["memory"].removesuffix("Mi")) if own else 256
        assert ("[ok] quota        ResourceQuota airflow-kpo-runner: pods 0/20, requests.cpu 0/8, requests.memory 0/16Gi, "
                "requests.nvidia.com/gpu 0/1, limits.memory 0/32Gi; remote_kpo's pod fits (pods 1, requests.cpu 101m, "
                f"requests.memory 138Mi, limits.memory {256 + sidecar_limit}Mi)") in result.log
        assert reads(cluster) == {("get", "limitranges", "airflow-kpo-runner", 200),
                                  ("get", "resourcequotas", "airflow-kpo-runner", 200)}, "both read by name, allowed"


def test_a_quota_too_small_for_the_example_pod_fails_the_preflight_as_the_api_server_refuses_it(
        render, airflow_home, tmp_path):
    project = render(GENERIC_XCOM)
    quota = manifest(project, "resourcequota")
    quota["spec"]["hard"]["requests.cpu"] = "100m"  # the pod asks for 101m: 100m base, 1m sidecar
    fast = variant(project.path, tmp_path, retries=0)
    with Cluster(fast, airflow_home, tmp_path, namespace_limits=[manifest(project, "resource-defaults"), quota]) as cluster:
        preflight = cluster.run("check_remote_cluster")
        assert preflight.state == "failed", preflight.log[-4000:]
        assert ("remote_kpo's pod does not fit in ResourceQuota airflow-kpo-runner (pods 0/20, requests.cpu 0/100m, "
                in preflight.log)
        assert "it needs requests.cpu 101m with 100m left: raise it in k8s/resourcequota.yaml" in preflight.log
        assert "[ok] quota" not in preflight.log

        run = cluster.run("remote_kpo")  # what the preflight foresaw: the API server refuses the pod
        assert run.state == "failed", run.log[-4000:]
        assert ("exceeded quota: airflow-kpo-runner, requested: requests.cpu=101m, used: requests.cpu=0, "
                "limited: requests.cpu=100m") in run.log
        assert cluster.double.created_pods == []


def test_remote_kpo_runs_and_its_sidecar_gets_the_default_limit(render, airflow_home, tmp_path):
    project = render(GENERIC_XCOM)
    with Cluster(project.path, airflow_home, tmp_path) as cluster:
        # A connection that sets no sidecar resources: the operator keeps the provider's (no limit).
        key = f"AIRFLOW_CONN_{cluster.rc.KUBERNETES_CONN_ID.upper()}"
        connection = json.loads(cluster.connections[key])
        connection["extra"].pop("xcom_sidecar_container_resources", None)
        cluster.connections[key] = json.dumps(connection)
        result = cluster.run("remote_kpo")
        assert result.succeeded, result.log[-6000:]
        assert "the remote pod ran on" in result.log, "the XCom came back through the sidecar"
        (pod,) = cluster.double.created_pods
        resources = {c["name"]: c["resources"] for c in pod["spec"]["containers"]}
        assert resources["base"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
        assert resources["airflow-xcom-sidecar"] == {"requests": {"cpu": "1m", "memory": "10Mi"},
                                                     "limits": {"memory": "256Mi"}}, "the LimitRange's default"
        assert pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == \
            "LimitRanger plugin set: memory limit for container airflow-xcom-sidecar"
        quota = cluster.double.limits.read("resourcequotas", "airflow-kpo-runner", cluster.double.live_pods())
        assert quota["status"]["used"]["pods"] == "0", "the pod was deleted: nothing is charged any more"
