"""The ephemeral GPU node group DAG and the native EksPodOperator, end to end on AWS.

Real: the rendered project (DAGs, include/, aws/runner-policy.json, the trust policy, the
connections written by scripts/write_connection.py), Airflow 3.3 with the amazon provider's
node-group operator, sensor and deferrable delete (aiobotocore), EksPodOperator and
cncf-kubernetes. Simulated (tests/kube_api_double): the Kubernetes API, STS and the EKS API,
which allows each call only if the rendered permission policy grants it, and schedules a pod
aimed at the node group only while that node group is ACTIVE. The only edit to the project:
the node-group poll interval drops from 30 s to 1 s.
"""

from __future__ import annotations

import shutil

import pytest
from e2e_harness import Cluster, migrate


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home-gpu"))


def fast(project, tmp_path):
    """A copy of the project whose GPU DAG polls every second."""
    target = tmp_path / "fast" / project.path.name
    shutil.copytree(project.path, target)
    dag = target / "dags" / "remote_kpo_gpu.py"
    dag.write_text(dag.read_text().replace("POLL_SECONDS = 30", "POLL_SECONDS = 1"))
    return target


@pytest.fixture(params=["kubernetes", "native"])
def gpu_project(request, render, tmp_path):
    return fast(render({"cloud": "aws", "xcom": False, "gpu_node_group": True, "pod_operator": request.param}), tmp_path)


def no_node_groups_left(cluster: Cluster) -> bool:
    return cluster.eks_api.nodegroups == {}


def test_gpu_pod_runs_on_a_node_group_that_is_gone_afterwards(gpu_project, airflow_home, tmp_path):
    with Cluster(gpu_project, airflow_home, tmp_path) as cluster:
        result = cluster.run("remote_kpo_gpu")
        assert result.succeeded, result.log[-6000:]
        actions = [c["action"] for c in cluster.eks_api.calls]
        assert actions[:2] == ["DescribeCluster", "CreateNodegroup"]
        assert "DeleteNodegroup" in actions and no_node_groups_left(cluster)
        denied = [c for c in cluster.eks_api.calls if c["caller"] is None]
        assert not denied
        assert all(":assumed-role/" in c["caller"] for c in cluster.eks_api.calls), "every call as the runner role"
        (pod,) = cluster.double.created_pods
        assert pod["spec"]["nodeSelector"] == {"eks.amazonaws.com/nodegroup": cluster.rc.GPU_NODE_GROUP_NAME}
        base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
        assert base["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert cluster.double.live_pods() == []
        assert cluster.double.pod_security_warnings == [], "the GPU pod meets the namespace's restricted level"


@pytest.mark.parametrize("failure", ["pod fails", "node group never ready"])
def test_node_group_is_deleted_when_the_run_fails(render, airflow_home, tmp_path, failure):
    project = fast(render({"cloud": "aws", "xcom": False, "gpu_node_group": True}), tmp_path)
    options = {"double_options": {"exit_code": 1}} if failure == "pod fails" else {
        "eks_api_options": {"create_fails": True}}
    with Cluster(project, airflow_home, tmp_path, **options) as cluster:
        result = cluster.run("remote_kpo_gpu")
        assert result.state == "failed", result.log[-6000:]
        assert no_node_groups_left(cluster), "the teardown deleted the node group"
        assert "DeleteNodegroup" in [c["action"] for c in cluster.eks_api.calls]
        if failure == "node group never ready":
            assert cluster.double.created_pods == [], "no pod is started on a node group that failed"


def test_native_eks_pod_operator_runs_the_example(render, airflow_home, tmp_path):
    project = render({"cloud": "aws", "xcom": True, "pod_operator": "native"})
    with Cluster(project.path, airflow_home, tmp_path) as cluster:
        preflight = cluster.run("check_remote_cluster")
        assert preflight.succeeded, preflight.log[-6000:]
        assert "[ok] permissions  all" in preflight.log
        result = cluster.run("remote_kpo")
        assert result.succeeded, result.log[-6000:]
        assert "the remote pod ran on" in result.log, "XCom through EksPodOperator"
        assert cluster.double.live_pods() == []
        assert {c["action"] for c in cluster.eks_api.calls} == {"DescribeCluster"}
