"""End to end, several clusters: a project rendered for EKS takes a generic (service-account
token) cluster with the template's real add command, and its multi-cluster DAGs run in real
Airflow against one API double per cluster (tests/e2e_harness.py, ``Clusters``).

Each double serves its own cluster's k8s/ (Role, RoleBinding, namespace limits) and each
cluster's own scripts/write_connection.py wrote its connection into the project's one
connection.env against CLI stand-ins pointing at its own double; the EKS cluster signs in through
the STS double with the project's trust policy and access entry, the generic one with a
ServiceAccount token. The Airflow processes see only the image's packages.

- remote_kpo_clusters runs one pod on each cluster at the same time (LocalExecutor, an execution
  API server and a triggerer, as deployed: ``dag.test()`` alone would run them one after the other);
- check_remote_clusters passes on both, each cluster asked about exactly its own permissions;
- with the Role emptied on one cluster only, that cluster's permissions step fails, every step of
  the other succeeds, and the report fails naming exactly the broken cluster (both ways round);
- the other way round (a generic project takes an EKS cluster): both pods at once again, and the
  added EKS cluster signs in with its own plugin path, runner role, external id and RBAC group.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from e2e_harness import Clusters, add_cluster, cluster_parts, migrate, template_copy

PRIMARY = {"cloud": "aws", "xcom": True, "cluster_name": "eks-main", "namespace": "eks-jobs"}
ADDED = {"cluster_id": "onprem", "cloud": "generic", "namespace": "batch-jobs", "xcom": False}
NAMES = [PRIMARY["cluster_name"], ADDED["cluster_id"]]
# Every pod runs this much longer on its double, so that two pods started together are alive together
# with room to spare, and two started one after the other are not.
RUN_SECONDS = 4


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home-clusters"))


@pytest.fixture(scope="module")
def project(render, tmp_path_factory) -> Path:
    """The EKS project with the generic cluster added by `cookiecutter <template> --directory cluster`."""
    work = tmp_path_factory.mktemp("multi-cluster")
    target = work / "project" / "remote_kpo"
    shutil.copytree(render(PRIMARY).path, target)
    add_cluster(target, template_copy(work / "template"), ADDED)
    return target


def key(clusters: Clusters, name: str) -> str:
    """The cluster's task-id key: its package for an added cluster, the name made safe for the primary."""
    part = clusters[name].part
    return Path(part).name if part else re.sub(r"\W", "_", name)


def empty_role(project: Path, name: str) -> dict:
    """The cluster's Role as if removed: same name, no rules (its RoleBinding still points at it)."""
    role = yaml.safe_load((project / cluster_parts(project)[name] / "k8s" / "role.yaml").read_text())
    assert role["kind"] == "Role" and role["rules"]
    return {**role, "rules": []}


def not_ready(log: str) -> list[str]:
    """The cluster names in the report's failure ("not ready: a (step: why); b (...)")."""
    found = re.findall(r"AirflowFailException: not ready: (.*)", log) or re.findall(r"not ready: (.*)", log)
    assert found, "the report names no cluster"
    return [item.split(" (", 1)[0] for item in found[-1].split("; ")]


def test_the_project_has_both_clusters(project, airflow_home, tmp_path):
    with Clusters(project, airflow_home, tmp_path) as clusters:
        assert list(clusters.members) == NAMES
        assert clusters[NAMES[1]].part == "clusters/onprem"
        # Each cluster's own write_connection.py wrote its own line of the one connection.env.
        assert sorted(clusters.connections) == ["AIRFLOW_CONN_REMOTE_KUBERNETES", "AIRFLOW_CONN_REMOTE_KUBERNETES_ONPREM"]
        for name, member in clusters.members.items():
            assert member.double.url in clusters.connections[f"AIRFLOW_CONN_{member.rc.CONNECTION_ID.upper()}"], name
        assert clusters[NAMES[0]].sts and not clusters[NAMES[1]].sts, "EKS through STS; the generic one by token"


@pytest.mark.parametrize("layout", ["eks+generic", "generic+eks"])
def test_remote_kpo_clusters_runs_a_pod_on_each_cluster_at_once(request, airflow_home, tmp_path, layout):
    project = request.getfixturevalue("project" if layout == "eks+generic" else "reverse_project")
    names = list(cluster_parts(project))
    options = {name: {"double_options": {"extra_run_seconds": RUN_SECONDS}} for name in names}
    with Clusters(project, airflow_home, tmp_path, options) as clusters:
        result = clusters.run("remote_kpo_clusters", executor=True)
        assert result.succeeded, result.log[-6000:]
        assert result.tasks == {f"hello_{key(clusters, n)}": "success" for n in names} | {"use_results": "success"}, \
            result.tasks
        lifetimes = {}
        for name, member in clusters.members.items():
            (pod,) = member.double.created_pods  # its own pod, on its own cluster, nothing of the other's
            assert pod["metadata"]["namespace"] == member.rc.REMOTE_NAMESPACE
            assert pod["metadata"]["labels"]["task_id"] == f"hello_{key(clusters, name)}"
            assert member.double.live_pods() == [], f"{name}: the pod is deleted at the end"
            assert member.double.pod_security_warnings == [], f"{name}: {member.double.pod_security_warnings}"
            assert f"on cluster {name}" in "".join(member.double.pod_log_lines(pod["metadata"]["name"]))
            assert f"on cluster {name}" in result.log, "the pod's log reached the task log"
            assert {r["status"] for r in member.double.requests} <= {200, 201, 101}
            pod_calls = [r for r in member.double.requests if r["path"].endswith("/pods") and r["method"] == "POST"]
            deletes = [r for r in member.double.requests if r["method"] == "DELETE"]
            lifetimes[name] = (pod_calls[0]["t"], deletes[-1]["t"])
        first_deleted = min(end for _, end in lifetimes.values())
        last_created = max(start for start, _ in lifetimes.values())
        assert last_created < first_deleted, f"the pods ran one after the other, not at once: {lifetimes}"
        # The EKS pod's token came through the STS double: its exec plugin (run by the worker and by
        # the triggerer) assumed the runner role.
        (eks,) = [member for member in clusters.members.values() if member.sts]
        assert eks.sts.calls and {c["ExternalId"] for c in eks.sts.calls} == {eks.rc.RUNNER_EXTERNAL_ID}
        assert "trigger completed" in result.log, "the pods were watched by the triggerer (deferred)"


def test_check_remote_clusters_passes_on_both(project, airflow_home, tmp_path):
    with Clusters(project, airflow_home, tmp_path) as clusters:
        result = clusters.run("check_remote_clusters")
        assert result.succeeded, result.log[-6000:]
        assert set(result.tasks.values()) == {"success"} and len(result.tasks) == 11, result.tasks
        for name, member in clusters.members.items():
            assert f"Remote cluster {name}: ready" in result.log
            reviews = {(r["review"]["verb"], r["review"]["resource"], r["review"]["subresource"])
                       for r in member.double.requests if "review" in r and not r["review"].get("name")}
            assert reviews == set(member.rc.REQUIRED_PERMISSIONS), f"{name} was asked about its own permissions"


@pytest.mark.parametrize("broken", NAMES)
def test_a_cluster_without_its_role_fails_alone_and_is_named(project, airflow_home, tmp_path, broken):
    with Clusters(project, airflow_home, tmp_path, {broken: {"role": empty_role(project, broken)}}) as clusters:
        result = clusters.run("check_remote_clusters")
        assert result.state == "failed", result.log[-6000:]
        (healthy,) = set(NAMES) - {broken}
        bad, good = key(clusters, broken), key(clusters, healthy)
        expected = {f"{good}.{step}": "success" for step in ("connection", "credentials", "api_server", "permissions", "quota")}
        expected |= {f"{bad}.{step}": "success" for step in ("connection", "credentials", "api_server")}
        expected |= {f"{bad}.permissions": "failed", f"{bad}.quota": "upstream_failed", "report": "failed"}
        assert result.tasks == expected, result.tasks
        assert not_ready(result.log) == [broken], "the report names exactly the broken cluster"
        namespace = clusters[broken].rc.REMOTE_NAMESPACE
        assert re.search(rf"Remote cluster {broken}: NOT READY \(permissions: .*missing in namespace {namespace}", result.log)
        assert f"Remote cluster {healthy}: ready" in result.log
        granted = yaml.safe_load((clusters[healthy].folder / "k8s" / "role.yaml").read_text())
        assert granted["rules"], "the healthy cluster kept its Role"


# The other way round: a generic project takes an EKS cluster (its token plugin at
# clusters/eks_batch/include/kube_auth/eks_token.py, its own runner role, external id and RBAC group).
REVERSE_PRIMARY = {"cloud": "generic", "xcom": False, "cluster_name": "onprem-main", "namespace": "main-jobs"}
REVERSE_ADDED = {"cluster_id": "eks-batch", "cloud": "aws", "namespace": "batch-jobs", "xcom": True,
                 "aws_account_id": "345678901234"}


@pytest.fixture(scope="module")
def reverse_project(render, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("multi-cluster-reverse")
    target = work / "project" / "remote_kpo"
    shutil.copytree(render(REVERSE_PRIMARY).path, target)
    add_cluster(target, template_copy(work / "template"), REVERSE_ADDED)
    return target


def test_an_added_eks_cluster_signs_in_as_its_own_role(reverse_project, airflow_home, tmp_path):
    with Clusters(reverse_project, airflow_home, tmp_path) as clusters:
        eks = clusters["eks-batch"]
        assert eks.rc.EXEC_PLUGIN["args"][0] == "/usr/local/airflow/clusters/eks_batch/include/kube_auth/eks_token.py"
        result = clusters.run("check_remote_clusters")
        assert result.succeeded, result.log[-6000:]
        assert set(result.tasks.values()) == {"success"} and len(result.tasks) == 11, result.tasks
        assert eks.rc.RUNNER_EXTERNAL_ID == "remote-kpo-eks-batch-remote-kpo"
        assert eks.sts.calls and {c["ExternalId"] for c in eks.sts.calls} == {eks.rc.RUNNER_EXTERNAL_ID}
        assert "authenticated as arn:aws:sts::345678901234:assumed-role/remote-kpo-eks-batch-kpo-runner/" in result.log
        # EKS maps the role to the cluster's own group (access entry), which its own RoleBinding names.
        assert eks.manifest("rolebinding")["subjects"] == [{"kind": "Group", "name": "airflow-kpo-runners-eks-batch",
                                                            "apiGroup": "rbac.authorization.k8s.io"}]
        assert "groups=airflow-kpo-runners-eks-batch" in result.log
        assert "Remote cluster onprem-main: ready" in result.log and "Remote cluster eks-batch: ready" in result.log
