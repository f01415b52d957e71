"""The XCom sidecar image is the project's choice, and the triggerer's event watch is granted.

Sidecar: XCOM_SIDECAR_IMAGE and XCOM_SIDECAR_RESOURCES (include/remote_cluster.py) reach the
pod the cluster receives: through the kubernetes connection's extras for KubernetesPodOperator,
through RemotePodOperator for the native operators, which have no such connection. The
preflight warns when the connection's values are not the project's.

Events: k8s/role.yaml grants `watch` on events (benchmarks/events_watch.py has the figures).
With it a deferrable run watches its pod's events and meets no 403; without it, the same run
still succeeds but its watch is refused once (a "forbid" in the cluster's audit log) and it
polls instead. Two Airflow runs against the API double (generic cloud, the fastest) pin both.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CASES, airflow_env, params
from e2e_harness import Cluster, migrate

GENERIC = {"cloud": "generic", "xcom": True}
NATIVE = params([{"cloud": "aws", "xcom": True, "pod_operator": "native"},
                 {"cloud": "gcp", "xcom": True, "pod_operator": "native"}])
# What a user behind a private registry would name: a mirror, pinned by digest.
MIRROR = "registry.example.com/mirror/alpine:3.24.2@sha256:" + "0" * 64
MIRROR_RESOURCES = {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "48Mi"}}
SIDECAR = "airflow-xcom-sidecar"
EVENT_LOGGED = "Successfully assigned"  # the double's Scheduled event, as the operator logs it
FALLBACK = "Kubernetes API does not permit watching events; falling back to polling"


def constants(project: Path) -> dict:
    """XCOM_SIDECAR_IMAGE and XCOM_SIDECAR_RESOURCES as rendered (read, not imported: no Airflow)."""
    text = (project / "include" / "remote_cluster.py").read_text()
    scope: dict = {}
    for name in ("XCOM_SIDECAR_IMAGE", "XCOM_SIDECAR_RESOURCES"):
        statement = re.search(rf"^{name}\b.*?(?=^\S)", text, re.M | re.S).group(0)
        exec(statement, {}, scope)  # noqa: S102 - the rendered project's own constant
    return scope


def with_sidecar(project: Path, work: Path, image: str, resources: dict) -> Path:
    """A copy of the project with the two constants changed, as a user would edit them."""
    import shutil

    target = work / "mirror" / project.name
    shutil.copytree(project, target)
    path = target / "include" / "remote_cluster.py"
    text = path.read_text()
    old = constants(project)
    for name, value in (("XCOM_SIDECAR_IMAGE", image), ("XCOM_SIDECAR_RESOURCES", resources)):
        statement = re.search(rf"^{name}\b.*?(?=^\S)", text, re.M | re.S).group(0)
        text = text.replace(statement, f"{name} = {value!r}\n")
    path.write_text(text)
    assert constants(target) != old
    return target


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home"))


# -- unit level: every variant, no Airflow run --------------------------------------------------
def test_default_image_is_the_providers_own(project):
    """The default changes nothing for a cluster that pulls from Docker Hub; a provider upgrade
    that moves its image makes this fail, so the template follows it on purpose."""
    from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import XCOM_SIDECAR_IMAGE, PodDefaults

    values = constants(project.path)
    assert values["XCOM_SIDECAR_IMAGE"] == XCOM_SIDECAR_IMAGE
    assert values["XCOM_SIDECAR_RESOURCES"]["requests"] == PodDefaults.SIDECAR_CONTAINER.resources.requests
    assert set(values["XCOM_SIDECAR_RESOURCES"]["limits"]) == {"memory"}, "a memory limit, no CPU limit (no throttling)"


@pytest.mark.parametrize("answers", [c for c in CASES if c.values[0].get("pod_operator") != "native"])
def test_connection_carries_the_sidecar_settings(render, answers):
    """airflow_settings.yaml (and so connection.env, same function) holds both values, the
    resources as the JSON string the provider's hook json.loads."""
    project = render(answers)
    settings = yaml.safe_load((project.path / "airflow_settings.yaml").read_text())
    extra = settings["airflow"]["connections"][0]["conn_extra"]
    values = constants(project.path)
    assert extra["xcom_sidecar_container_image"] == values["XCOM_SIDECAR_IMAGE"]
    assert isinstance(extra["xcom_sidecar_container_resources"], str)
    assert json.loads(extra["xcom_sidecar_container_resources"]) == values["XCOM_SIDECAR_RESOURCES"]


NATIVE_BUILD = r"""
import json, os, sys, tempfile
from include import remote_cluster as rc
from include.remote_pod import CLUSTER_ARGS, RemotePodOperator

name = {"aws": "pod_name", "gcp": "name"}[rc.CLOUD]
op = RemotePodOperator(task_id="t", **CLUSTER_ARGS, **{name: "x"}, image="busybox", cmds=["true"], do_xcom_push=True)
# EksPodOperator writes its kubeconfig at run time; any cluster does here (nothing is called).
config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}, config)
config.close()
if rc.CLOUD == "aws":
    op.config_file = config.name  # the operator's own hook: connection kubernetes_default, absent
else:
    # GKEKubernetesHook reads the sidecar extras from the google connection and needs the GKE
    # API and a Google token to build its client: a KubernetesHook on that same connection
    # stands in for it (no sidecar extras there either).
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    os.environ["AIRFLOW_CONN_" + rc.CONNECTION_ID.upper()] = json.dumps(
        {"conn_type": rc.CONNECTION_TYPE, "extra": rc.connection_extra()})
    op.__dict__["hook"] = KubernetesHook(conn_id=rc.CONNECTION_ID, config_file=config.name)
    assert op.hook.get_xcom_sidecar_container_image() is None
pod = op.build_pod_request_obj()
(sidecar,) = [c for c in pod.spec.containers if c.name == "airflow-xcom-sidecar"]
from kubernetes.client import ApiClient
other = RemotePodOperator(task_id="u", **CLUSTER_ARGS, **{name: "y"}, image="busybox", cmds=["true"], do_xcom_push=True)
shared = other.xcom_sidecar_container_security_context is op.xcom_sidecar_container_security_context
print("SIDECAR", json.dumps({"image": sidecar.image, "resources": pod.to_dict()["spec"]["containers"][-1]["resources"],
                             "securityContext": ApiClient().sanitize_for_serialization(sidecar.security_context),
                             "shared": shared}))
"""


@pytest.mark.parametrize("answers", NATIVE)
def test_native_operator_pods_get_the_projects_sidecar(render, answers, airflow_home, tmp_path):
    """No kubernetes connection: RemotePodOperator applies the constants itself; a changed
    constant is what the pod gets (the default equals the provider's image, so it is changed)."""
    project = with_sidecar(render(answers).path, tmp_path, MIRROR, MIRROR_RESOURCES)
    done = subprocess.run([sys.executable, "-c", NATIVE_BUILD], cwd=project, capture_output=True, text=True,
                          env=airflow_env(project, airflow_home), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sidecar = json.loads(done.stdout.split("SIDECAR ", 1)[1])
    assert sidecar["image"] == MIRROR
    resources = {k: v for k, v in sidecar["resources"].items() if v}
    assert resources == MIRROR_RESOURCES
    # Its own securityContext (the provider's sidecar has none), no user of its own: it runs as the pod's.
    assert sidecar["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                          "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert sidecar["shared"] is False, "each task has its own copy (the provider attaches the object to the pod)"


PREFLIGHT = r"""
import json, sys
from include import preflight, remote_cluster as rc
extra = rc.connection_extra(server="https://cluster.example:443", ca_data="Q0E=", token="t")
print("SAME", json.dumps([preflight.check_connection(extra), type(preflight.check_connection(extra)).__name__]))
extra["xcom_sidecar_container_image"] = "alpine:latest"
extra["xcom_sidecar_container_resources"] = "{}"
print("STALE", json.dumps([preflight.check_connection(extra), type(preflight.check_connection(extra)).__name__]))
"""


def test_preflight_warns_when_the_connection_has_another_sidecar(render, airflow_home):
    project = render(GENERIC).path
    done = subprocess.run([sys.executable, "-c", PREFLIGHT], cwd=project, capture_output=True, text=True,
                          env=airflow_env(project, airflow_home), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("SAME", "STALE")))
    same, stale = json.loads(lines["SAME"]), json.loads(lines["STALE"])
    assert same == ["endpoint https://cluster.example:443, CA present", "str"]
    assert stale[1] == "Attention", "a warning: the run goes on with the connection's values"
    assert "XCom sidecar's image and resources in the connection differ from include/remote_cluster.py" in stale[0]


# -- end to end: two Airflow runs against the API double ----------------------------------------
def sidecar_of(cluster: Cluster) -> dict:
    (pod,) = cluster.double.created_pods
    (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == SIDECAR]
    return sidecar


def events_calls(cluster: Cluster) -> list[tuple[str, int]]:
    return [(r["verb"], r["status"]) for r in cluster.double.requests if r.get("resource") == "events"]


# The pod stays Pending 3 s, so the triggerer is surely still waiting for it when it starts
# watching events (it watches only while the pod is Pending).
PENDING = {"pending_seconds": 3}


def test_rendered_project_sidecar_and_event_watch(render, airflow_home, tmp_path):
    project = render(GENERIC).path
    values = constants(project)
    with Cluster(project, airflow_home, tmp_path, double_options=dict(PENDING)) as cluster:
        result = cluster.run("remote_kpo")
        assert result.succeeded, result.log[-4000:]
        sidecar = sidecar_of(cluster)
        assert sidecar["image"] == values["XCOM_SIDECAR_IMAGE"]
        assert sidecar["resources"] == values["XCOM_SIDECAR_RESOURCES"]
        assert "the remote pod ran on" in result.log, "the XCom went through this sidecar"
        calls = events_calls(cluster)
        assert ("watch", 200) in calls, f"the triggerer watched the pod's events: {calls}"
        assert [r for r in cluster.double.requests if r["status"] == 403] == [], "no 403 at all"
        assert FALLBACK not in result.log
        assert EVENT_LOGGED in result.log, "the watched events reached the task log"


def test_changed_constant_and_role_without_watch(render, airflow_home, tmp_path):
    """A mirror named in the constant is what the cluster receives; a Role without `watch`
    costs one refused watch per task, and the events still arrive by polling."""
    project = with_sidecar(render(GENERIC).path, tmp_path, MIRROR, MIRROR_RESOURCES)
    role = yaml.safe_load((project / "k8s" / "role.yaml").read_text())
    (rule,) = [r for r in role["rules"] if r["resources"] == ["events"]]
    rule["verbs"].remove("watch")
    with Cluster(project, airflow_home, tmp_path, role=role, double_options=dict(PENDING)) as cluster:
        result = cluster.run("remote_kpo")
        assert result.succeeded, result.log[-4000:]
        sidecar = sidecar_of(cluster)
        assert (sidecar["image"], sidecar["resources"]) == (MIRROR, MIRROR_RESOURCES)
        denied = [r for r in cluster.double.requests if r["status"] == 403]
        assert [(r["verb"], r["resource"]) for r in denied] == [("watch", "events")], "exactly one 403 per task"
        assert FALLBACK in result.log and 'cannot watch resource "events"' in result.log
        assert ("list", 200) in events_calls(cluster), "then it polls with list"
        assert EVENT_LOGGED in result.log, "the events still reach the task log"
