"""The pieces that must agree do agree: manifests, connection, DAGs and the Role's rules.

These run without a cluster: they read the files this project deploys and the DAGs as
Airflow parses them.
"""

import functools
import importlib
import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from include import remote_cluster as rc

PROJECT = Path(__file__).resolve().parent.parent


def manifests() -> dict[str, dict]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted((PROJECT / "k8s").glob("*.yaml"))}


def settings() -> dict:
    return yaml.safe_load((PROJECT / "airflow_settings.yaml").read_text())["airflow"]


@functools.cache
def project_clusters() -> dict[str, str]:
    """{connection id: package of that cluster's modules}: the cluster this project was rendered for
    (include/) and every cluster added later (its include/ under clusters/)."""
    found = {rc.CONNECTION_ID: "include"}
    for path in sorted(PROJECT.glob("clusters/*/cluster.json")):
        package = f"clusters.{path.parent.name}.include"
        found[importlib.import_module(f"{package}.remote_cluster").CONNECTION_ID] = package
    return found


@pytest.fixture(scope="module")
def pod_tasks():
    """Every pod task of every DAG in dags/: the examples, the team's own, those of added clusters."""
    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return [t for d in bag.dags.values() for t in d.tasks if isinstance(t, KubernetesPodOperator)]


def target(task) -> str | None:
    """The package of the cluster a pod task runs on, found by its connection; None: no cluster of ours."""
    clusters = project_clusters()
    for attribute in ("aws_conn_id", "gcp_conn_id", "kubernetes_conn_id"):  # native operators: the cloud's
        if getattr(task, attribute, None) in clusters:
            return clusters[getattr(task, attribute)]
    return None


def broken_rules(task) -> list[str]:
    """What a pod task breaks of the rules every pod task on a remote cluster must follow, one line each."""
    where = f"{task.dag_id}.{task.task_id}"
    package = target(task)
    if package is None:
        used = sorted({str(getattr(task, a)) for a in ("aws_conn_id", "gcp_conn_id", "kubernetes_conn_id")
                       if getattr(task, a, None)})
        return [f"{where}: connection: {', '.join(used)} is no cluster of this project ({', '.join(project_clusters())}); "
                "pass **CLUSTER_ARGS (include/remote_pod.py) or use RemotePod(<cluster>, ...) (clusters/)"]
    settings = importlib.import_module(f"{package}.remote_cluster")
    remote_pod = importlib.import_module(f"{package}.remote_pod")
    broken = []
    if task.namespace != settings.REMOTE_NAMESPACE:
        broken.append(f"{where}: namespace: {task.namespace!r}, but the Role allows pods only in "
                      f"{settings.REMOTE_NAMESPACE!r} on this cluster")
    if task.in_cluster is not False:
        broken.append(f"{where}: in_cluster: {task.in_cluster!r}; it must be False on a remote cluster "
                      "(None makes the deferred trigger look for a cluster around Airflow)")
    if settings.POD_OPERATOR == "native" and getattr(task, "cluster_name", None) != settings.CLUSTER_NAME:
        broken.append(f"{where}: cluster_name: {getattr(task, 'cluster_name', None)!r}, not {settings.CLUSTER_NAME!r}")
    if task.pool != settings.REMOTE_POOL:
        broken.append(f"{where}: pool: {task.pool!r}; pods on this cluster share the pool {settings.REMOTE_POOL!r}, "
                      "which caps how many run at once")
    has_deadline = getattr(task, "active_deadline_seconds", None) or (
        isinstance(task, remote_pod.RemotePodOperator)
        and (task.execution_timeout or remote_pod.POD_DEADLINE_WITHOUT_TIMEOUT))
    if not has_deadline:
        broken.append(f"{where}: deadline: the pod has none, so it runs on if Airflow is gone; use RemotePodOperator "
                      "(it sets one from execution_timeout) or active_deadline_seconds")
    if task.do_xcom_push and not settings.XCOM_ENABLED:
        broken.append(f"{where}: do_xcom_push: the XCom is read through pods/exec, which this cluster's Role does not "
                      "grant (the project was made with xcom=no); set do_xcom_push=False or grant it (README)")
    return broken


def test_kubectl_apply_of_the_folder_creates_the_namespace_first():
    """`kubectl apply -f k8s/` goes in file name order; a namespaced object before its namespace fails."""
    assert sorted(p.name for p in (PROJECT / "k8s").glob("*.yaml"))[0] == "namespace.yaml"


def test_every_manifest_targets_the_project_namespace():
    for name, doc in manifests().items():
        namespace = doc["metadata"]["name"] if doc["kind"] == "Namespace" else doc["metadata"]["namespace"]
        assert namespace == rc.REMOTE_NAMESPACE, name


def test_role_grants_exactly_the_required_permissions():
    rules = manifests()["role"]["rules"]
    granted = {
        (verb, *(resource.split("/", 1) + [""])[:2])
        for rule in rules if "resourceNames" not in rule
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    named = {  # rules limited to objects by name: the preflight's read of the quota
        (verb, resource, name)
        for rule in rules if "resourceNames" in rule
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule["resourceNames"]
    }
    assert all(rule["apiGroups"] == [""] for rule in rules)
    assert granted == set(rc.REQUIRED_PERMISSIONS)
    assert named == set(rc.NAMED_PERMISSIONS)
    assert {manifests()["resourcequota"]["metadata"]["name"], manifests()["resource-defaults"]["metadata"]["name"]} == {
        name for _, _, name in rc.NAMED_PERMISSIONS}


def test_rolebinding_binds_that_role():
    role, binding = manifests()["role"], manifests()["rolebinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}


def test_connection_is_the_one_the_dags_use():
    connections = [c for c in settings()["connections"] if c["conn_id"] == rc.CONNECTION_ID]
    assert len(connections) == 1
    extra = connections[0]["conn_extra"]
    assert connections[0]["conn_type"] == rc.CONNECTION_TYPE
    if rc.POD_OPERATOR == "native":  # the cloud's connection: no kubeconfig at all
        assert extra == rc.connection_extra()
        return
    assert extra["namespace"] == rc.REMOTE_NAMESPACE
    assert extra["kube_config"]["contexts"][0]["context"]["namespace"] == rc.REMOTE_NAMESPACE
    assert extra["kube_config"] == rc.kube_config(**server_and_ca(extra["kube_config"]))


def server_and_ca(kube_config: dict) -> dict:
    cluster = kube_config["clusters"][0]["cluster"]
    user = kube_config["users"][0]["user"]
    found = {"server": cluster["server"], "ca_data": cluster.get("certificate-authority-data", "")}
    return found if "exec" in user else {**found, "token": user.get("token", "")}


def test_pool_exists_locally_with_the_dags_name():
    pools = {p["pool_name"]: p["pool_slot"] for p in settings()["pools"]}
    assert pools[rc.REMOTE_POOL] == rc.REMOTE_POOL_SLOTS


def test_every_pod_task_follows_the_rules(pod_tasks):
    """Every pod task, the team's own too: one of this project's clusters, its namespace and pool,
    in_cluster=False, a pod deadline, and no XCom where the Role cannot read one."""
    assert pod_tasks
    broken = [line for t in pod_tasks for line in broken_rules(t)]
    assert not broken, "\n".join(broken)


def example_task(pod_tasks, dag_id: str, task_id: str):
    found = [t for t in pod_tasks if (t.dag_id, t.task_id) == (dag_id, task_id)]
    if not found:
        pytest.skip(f"the example {dag_id}.{task_id} is no longer in dags/")
    return found[0]


def test_the_example_pod_task_is_set_up_as_the_docs_say(pod_tasks):
    """What the example promises (README): deferred, deleted when done, GPU-sized timeouts, its XCom."""
    t = example_task(pod_tasks, "remote_kpo", "hello_remote")
    assert t.deferrable is True
    assert t.do_xcom_push is rc.XCOM_ENABLED
    assert t.on_finish_action.value == "delete_pod"
    assert t.startup_timeout_seconds >= 600, "GPU node scale-up takes minutes"
    assert (t.container_resources.requests, t.container_resources.limits) == (
        rc.EXAMPLE_POD_REQUESTS, rc.EXAMPLE_POD_LIMITS), "the preflight checks these constants"


def test_the_dags_pods_fit_in_the_quota(pod_tasks):
    """Each pod the DAGs start fits in its cluster's empty quota with the LimitRange's defaults
    (k8s/resourcequota.yaml, k8s/resource-defaults.yaml), and so does remote_kpo's with USE_GPU = True."""

    def over(task, requests, limits) -> dict:
        package = target(task)
        settings = importlib.import_module(f"{package}.remote_cluster")
        preflight = importlib.import_module(f"{package}.preflight")
        containers = [{"name": "base", "requests": dict(requests or {}), "limits": dict(limits or {})}]
        if task.do_xcom_push:
            containers += preflight.example_pod_containers()[1:]
        usage = preflight.quota_usage(preflight.admitted(containers, settings.CONTAINER_DEFAULT_REQUESTS,
                                                         settings.CONTAINER_DEFAULT_LIMITS))
        return {k: v for k, v in settings.NAMESPACE_QUOTA.items() if usage.get(k, 0) > preflight.quantity(v)}

    too_big = {}
    for t in (t for t in pod_tasks if target(t)):
        resources = t.container_resources or SimpleNamespace(requests=None, limits=None)  # None: the defaults
        if found := over(t, resources.requests, resources.limits):
            too_big[f"{t.dag_id}.{t.task_id}"] = found
        if (t.dag_id, t.task_id) == ("remote_kpo", "hello_remote"):
            if found := over(t, rc.EXAMPLE_POD_REQUESTS, {**rc.EXAMPLE_POD_LIMITS, "nvidia.com/gpu": "1"}):
                too_big["remote_kpo.hello_remote with USE_GPU = True"] = found
    assert not too_big, f"pods larger than the namespace's whole quota (its API server refuses them): {too_big}"


def test_exec_plugin_is_in_the_image():
    dockerfile = (PROJECT / "Dockerfile").read_text()
    if rc.EXEC_PLUGIN is None:
        return
    command = rc.EXEC_PLUGIN["command"]
    if command == "python":  # EKS: the script ships in include/, boto3 in requirements.txt
        assert (PROJECT / rc.EXEC_PLUGIN["args"][0].removeprefix("/usr/local/airflow/")).is_file()
        assert "apache-airflow-providers-amazon" in (PROJECT / "requirements.txt").read_text()
    else:
        assert re.search(rf"COPY --from=\S+ \S*/{command} /usr/local/bin/{command}", dockerfile)


def test_connection_env_form_matches():
    import scripts.write_connection as wc

    extra = rc.connection_extra() if rc.POD_OPERATOR == "native" else rc.connection_extra(
        server="https://203.0.113.10", ca_data="Q0E=")
    (assignment, *_) = shlex.split(wc.connection_env([(rc.CONNECTION_ID, rc.CONNECTION_TYPE, extra)]), comments=True)
    name, _, value = assignment.partition("=")
    assert name == f"AIRFLOW_CONN_{rc.CONNECTION_ID.upper()}"
    assert json.loads(value) == {"conn_type": rc.CONNECTION_TYPE, "extra": extra}


@pytest.mark.skipif(not rc.GPU_NODE_GROUP, reason="the GPU node group DAG is not part of this project")
def test_gpu_node_group_is_deleted_whatever_happens(pod_tasks):
    from airflow.task.trigger_rule import TriggerRule

    from include import gpu_nodes

    dag = next(t.dag for t in pod_tasks if t.dag_id == "remote_kpo_gpu")
    create = dag.get_task(next(i for i in dag.task_ids if i.startswith("create_gpu")))
    delete = dag.get_task(next(i for i in dag.task_ids if i.startswith("delete_gpu")))
    ready, pod = dag.get_task("wait_until_ready"), dag.get_task("gpu_pod")
    assert create.is_setup and delete.is_teardown
    assert delete.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS
    assert create.task_id in delete.upstream_task_ids and pod.task_id in delete.upstream_task_ids
    assert ready.task_id in pod.upstream_task_ids and create.task_id in ready.upstream_task_ids
    assert dag.leaves == [delete]
    assert pod.node_selector == gpu_nodes.NODE_LABELS
    assert pod.container_resources.limits["nvidia.com/gpu"] == "1"
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pod.tolerations)
    assert ready.mode == "reschedule", "waiting for a node holds no worker slot"


@pytest.mark.skipif(not (rc.GPU_NODE_GROUP and rc.CLOUD == "gcp"), reason="GKE node pools only")
def test_node_pool_calls_are_safe_to_repeat():
    """Create tolerates a pool from an earlier try; status and delete tolerate a pool that is gone."""
    from google.api_core.exceptions import AlreadyExists, NotFound
    from google.cloud import container_v1

    from include import gpu_nodes

    class Client:
        def __init__(self):
            self.pools = {}

        def create_node_pool(self, parent, node_pool):
            assert parent == gpu_nodes.CLUSTER_PATH
            if node_pool.name in self.pools:
                raise AlreadyExists("exists")
            self.pools[node_pool.name] = node_pool

        def get_node_pool(self, name):
            pool = self.pools.get(name.rsplit("/", 1)[1])
            if pool is None:
                raise NotFound("gone")
            return container_v1.NodePool(name=pool.name, status=container_v1.NodePool.Status.RUNNING)

        def delete_node_pool(self, name):
            if self.pools.pop(name.rsplit("/", 1)[1], None) is None:
                raise NotFound("gone")

    client = Client()
    assert gpu_nodes.status(client) == gpu_nodes.GONE
    assert gpu_nodes.create(client) == "creating" and gpu_nodes.create(client) == "already exists"
    pool = client.pools[rc.GPU_NODE_GROUP_NAME]
    (accelerator,) = pool.config.accelerators
    assert accelerator.accelerator_type == rc.GPU_ACCELERATOR and accelerator.accelerator_count == 1
    assert pool.config.service_account == rc.GPU_NODE_SERVICE_ACCOUNT
    assert gpu_nodes.status(client) == "RUNNING"
    assert gpu_nodes.delete(client) is True and gpu_nodes.delete(client) is False
