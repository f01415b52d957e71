"""The API double's Pod Security admission (tests/kube_api_double/pod_security.py) says no as the
API server does with the rendered k8s/namespace.yaml's labels (enforce "baseline", warn
"restricted"): a pod breaking a "baseline" rule is refused with 403 and not created; a pod breaking
only a "restricted" rule is created with a Warning header naming the rule and the container. Each
rule is broken alone, next to a positive control: a restricted pod shaped like the one the example
DAG sends (pod-level user and seccomp, container-level no escalation and no capabilities, for the
base container and the XCom sidecar). The template's own pods are checked against this admission
end to end (tests/test_e2e.py, test_e2e_clusters.py, test_e2e_gpu.py: no warning).
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import urllib.error
import urllib.request

import pytest
from kube_api_double import ApiDouble
from kube_api_double.pod_security import PodSecurity
from test_doubles import manifest

GENERIC = {"cloud": "generic", "xcom": True}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# The pod remote_kpo.py sends: pod-level non-root user and seccomp, container-level no escalation
# and no capabilities, for the base container and the XCom sidecar alike.
COMPLIANT = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello-remote-abc12"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "xcom", "emptyDir": {}}],
        "containers": [
            {"name": "base", "image": "python:3.12-slim", "command": ["python", "-c", "print(1)"],
             "securityContext": copy.deepcopy(RESTRICTED_CONTAINER)},
            {"name": "airflow-xcom-sidecar", "image": "alpine:3.24.2", "command": ["sh", "-c", "sleep 1"],
             "securityContext": copy.deepcopy(RESTRICTED_CONTAINER)},
        ],
    },
}


def broken(path: str, value) -> dict:
    """COMPLIANT with one field set (value None: removed); path like 'spec.containers.1.securityContext'."""
    pod = copy.deepcopy(COMPLIANT)
    *parents, last = path.split(".")
    node = pod
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return pod


SIDECAR = "spec.containers.1.securityContext"
BASE = "spec.containers.0.securityContext"
# (what is broken, the pod, the rule's words in the API server's message)
RESTRICTED_ONLY = [
    ("sidecar without allowPrivilegeEscalation=false", broken(f"{SIDECAR}.allowPrivilegeEscalation", None),
     'allowPrivilegeEscalation != false (container "airflow-xcom-sidecar" must set '
     "securityContext.allowPrivilegeEscalation=false)"),
    ("sidecar keeping its capabilities", broken(f"{SIDECAR}.capabilities", None),
     'unrestricted capabilities (container "airflow-xcom-sidecar" must set securityContext.capabilities.drop=["ALL"])'),
    ("sidecar adding a capability baseline allows", broken(f"{SIDECAR}.capabilities.add", ["CHOWN"]),
     'unrestricted capabilities (container "airflow-xcom-sidecar" must not include "CHOWN" in '
     "securityContext.capabilities.add)"),
    ("no runAsNonRoot anywhere", broken("spec.securityContext.runAsNonRoot", None),
     'runAsNonRoot != true (pod or containers "base", "airflow-xcom-sidecar" must set '
     "securityContext.runAsNonRoot=true)"),
    ("runAsNonRoot false on the pod, true on each container",
     broken("spec.securityContext.runAsNonRoot", False) | {"spec": {
         **broken("spec.securityContext.runAsNonRoot", False)["spec"],
         "containers": [{**c, "securityContext": {**c["securityContext"], "runAsNonRoot": True}}
                        for c in COMPLIANT["spec"]["containers"]]}},
     "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)"),
    ("the sidecar as root", broken(f"{SIDECAR}.runAsUser", 0),
     'runAsUser=0 (container "airflow-xcom-sidecar" must not set runAsUser=0)'),
    ("the pod as root, each container another user",
     broken("spec.securityContext.runAsUser", 0) | {"spec": {
         **broken("spec.securityContext.runAsUser", 0)["spec"],
         "containers": [{**c, "securityContext": {**c["securityContext"], "runAsUser": 1000}}
                        for c in COMPLIANT["spec"]["containers"]]}},
     "runAsUser=0 (pod must not set runAsUser=0)"),
    ("no seccomp profile", broken("spec.securityContext.seccompProfile", None),
     'seccompProfile (pod or containers "base", "airflow-xcom-sidecar" must set securityContext.seccompProfile.type '
     'to "RuntimeDefault" or "Localhost")'),
    ("a gitRepo volume", broken("spec.volumes", [{"name": "xcom", "emptyDir": {}}, {"name": "src", "gitRepo": {}}]),
     'restricted volume types (volume "src" uses restricted volume type "gitRepo")'),
]
BASELINE = [
    ("a privileged container", broken(f"{BASE}.privileged", True),
     'privileged (container "base" must not set securityContext.privileged=true)'),
    ("the host's network", broken("spec.hostNetwork", True), "host namespaces (hostNetwork=true)"),
    ("the host's PIDs", broken("spec.hostPID", True), "host namespaces (hostPID=true)"),
    ("SYS_ADMIN", broken(f"{BASE}.capabilities.add", ["SYS_ADMIN"]),
     'non-default capabilities (container "base" must not include "SYS_ADMIN" in securityContext.capabilities.add)'),
    ("a hostPath volume", broken("spec.volumes", [{"name": "xcom", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}]),
     'hostPath volumes (volume "root")'),
    ("a hostPort", broken("spec.containers.0.ports", [{"containerPort": 80, "hostPort": 80}]),
     'hostPort (container "base" uses hostPort 80)'),
    ("an unconfined seccomp profile on the pod", broken("spec.securityContext.seccompProfile", {"type": "Unconfined"}),
     'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'),
    ("an unconfined seccomp profile on the sidecar", broken(f"{SIDECAR}.seccompProfile", {"type": "Unconfined"}),
     'seccompProfile (container "airflow-xcom-sidecar" must not set securityContext.seccompProfile.type to "Unconfined")'),
]


@pytest.fixture(scope="module")
def project(render):
    return render(GENERIC)


@pytest.fixture
def cluster(project):
    labels = manifest(project, "namespace")["metadata"]["labels"]
    with ApiDouble(project.answers["namespace"], [manifest(project, "role")], [manifest(project, "rolebinding")],
                   namespace_labels=labels, pending_seconds=600) as double:
        yield project, double, double.sa_tokens.mint(project.answers["namespace"], "airflow-kpo-runner", ttl=600)


def create(double, namespace: str, token: str, pod: dict) -> tuple[int, dict, str | None]:
    """POST the pod over HTTPS (verified with the double's CA): status, body, Warning header."""
    context = ssl.create_default_context(cadata=base64.b64decode(double.ca_data).decode())
    request = urllib.request.Request(f"{double.url}/api/v1/namespaces/{namespace}/pods", method="POST",
                                     data=json.dumps(pod).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.load(response), warning_text(response.headers.get("Warning"))
    except urllib.error.HTTPError as err:
        return err.code, json.load(err), warning_text(err.headers.get("Warning"))


def warning_text(header: str | None) -> str | None:
    """The text of a `299 - "..."` Warning header (RFC 9111: a quoted string, \\-escaped)."""
    if header is None:
        return None
    assert header.startswith('299 - "') and header.endswith('"'), header
    return header[len('299 - "'):-1].replace('\\"', '"').replace("\\\\", "\\")


def test_the_rendered_namespace_enforces_baseline_and_warns_on_restricted(project):
    security = PodSecurity(manifest(project, "namespace")["metadata"]["labels"])
    assert (security.enforce, security.warn) == ("baseline", "restricted")


def test_positive_control_the_example_pod_is_created_without_a_warning(cluster):
    project, double, token = cluster
    code, body, warning = create(double, project.answers["namespace"], token, COMPLIANT)
    assert (code, warning) == (201, None), body
    assert double.pod_security_warnings == []


@pytest.mark.parametrize(("what", "pod", "words"), RESTRICTED_ONLY, ids=[c[0].replace(" ", "-") for c in RESTRICTED_ONLY])
def test_a_pod_short_of_restricted_is_created_with_a_warning(cluster, what, pod, words):
    project, double, token = cluster
    code, body, warning = create(double, project.answers["namespace"], token, pod)
    assert code == 201, body
    assert warning and 'would violate PodSecurity "restricted:latest": ' in warning and words in warning, warning
    assert [name for name, _ in double.pod_security_warnings] == [pod["metadata"]["name"]]


@pytest.mark.parametrize(("what", "pod", "words"), BASELINE, ids=[c[0].replace(" ", "-") for c in BASELINE])
def test_a_pod_short_of_baseline_is_refused_and_not_created(cluster, what, pod, words):
    project, double, token = cluster
    code, body, _ = create(double, project.answers["namespace"], token, pod)
    assert code == 403 and body["reason"] == "Forbidden", body
    assert body["message"].startswith(f'pods "{pod["metadata"]["name"]}" is forbidden: violates PodSecurity '
                                      '"baseline:latest": '), body["message"]
    assert words in body["message"], body["message"]
    assert double.created_pods == [] and double.live_pods() == []


def test_without_labels_the_namespace_admits_anything(project):
    """The labels are what turns admission on: a namespace without them is "privileged"."""
    with ApiDouble(project.answers["namespace"], [manifest(project, "role")], [manifest(project, "rolebinding")],
                   pending_seconds=600) as double:
        token = double.sa_tokens.mint(project.answers["namespace"], "airflow-kpo-runner", ttl=600)
        code, _, warning = create(double, project.answers["namespace"], token, BASELINE[0][1])
        assert (code, warning) == (201, None)
