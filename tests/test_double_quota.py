"""The API double's ResourceQuota and LimitRange (tests/kube_api_double/quota.py) say no as the
API server does: each rule refuses through the double's HTTPS interface, with the API server's
code, reason and message, next to a positive control. The objects are the rendered
k8s/resourcequota.yaml and k8s/resource-defaults.yaml; pods are created as KubernetesPodOperator sends
them (a base container, the XCom sidecar with requests and no limit)."""

from __future__ import annotations

import copy
import time

import pytest
from kube_api_double import ApiDouble
from test_doubles import call, manifest

GENERIC = {"cloud": "generic", "xcom": False}
GPU = {"cloud": "aws", "xcom": False, "gpu_node_group": True}
SIDECAR = {"name": "airflow-xcom-sidecar", "image": "alpine:3.24.2", "command": ["sh", "-c", "sleep 1"],
           "resources": {"requests": {"cpu": "1m", "memory": "10Mi"}}}


def container(name: str = "base", requests: dict | None = None, limits: dict | None = None) -> dict:
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None}
    return {"name": name, "image": "busybox", "command": ["true"], "resources": resources}


def pod(name: str, *containers: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [copy.deepcopy(c) for c in containers] or [container()]}}


EXAMPLE = (container(requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "256Mi"}), SIDECAR)


def limits_of(project, *names: str) -> list[dict]:
    return [manifest(project, name) for name in names]


@pytest.fixture
def start(render):
    """A started double for the rendered project with the given namespace limits; pods stay
    Pending (so that they count against the quota) unless pending_seconds says otherwise."""
    started = []

    def _start(names=("resource-defaults", "resourcequota"), role: dict | None = None, pending_seconds: float = 600,
               limits: list[dict] | None = None):
        project = render(GENERIC)
        docs = limits_of(project, *names) if limits is None else limits
        double = ApiDouble(project.answers["namespace"], [role or manifest(project, "role")],
                           [manifest(project, "rolebinding")], namespace_limits=docs,
                           pending_seconds=pending_seconds).start()
        started.append(double)
        token = double.sa_tokens.mint(project.answers["namespace"], "airflow-kpo-runner", ttl=600)
        return project, double, token

    yield _start
    for double in started:
        double.stop()


def create(double: ApiDouble, token: str, body: dict, namespace: str = "airflow-jobs") -> tuple[int, dict]:
    return call(double, "POST", f"/api/v1/namespaces/{namespace}/pods", token, body)


def quota_status(double: ApiDouble, token: str) -> dict:
    code, quota = call(double, "GET", "/api/v1/namespaces/airflow-jobs/resourcequotas/airflow-kpo-runner", token)
    assert code == 200, quota
    return quota["status"]


def refused(answer: tuple[int, dict], code: int, reason: str) -> str:
    status, body = answer
    assert (status, body["reason"], body["code"]) == (code, reason, code), body
    return body["message"]


# -- LimitRange defaults ---------------------------------------------------------------------------
def test_positive_control_the_example_pod_is_admitted_and_the_sidecar_gets_the_default_limit(start):
    _, double, token = start()
    code, created = create(double, token, pod("hello-remote-1", *EXAMPLE))
    assert code == 201, created
    base, sidecar = created["spec"]["containers"]
    assert base["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    assert sidecar["resources"] == {"requests": {"cpu": "1m", "memory": "10Mi"}, "limits": {"memory": "256Mi"}}
    assert created["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == \
        "LimitRanger plugin set: memory limit for container airflow-xcom-sidecar"
    status = quota_status(double, token)
    assert status["used"] == {"pods": "1", "requests.cpu": "101m", "requests.memory": "138Mi", "limits.memory": "512Mi",
                              "requests.nvidia.com/gpu": "0"}
    assert status["hard"] == {"pods": "20", "requests.cpu": "8", "requests.memory": "16Gi", "limits.memory": "32Gi",
                              "requests.nvidia.com/gpu": "1"}


def test_a_container_without_requests_gets_the_defaults(start):
    _, double, token = start()
    code, created = create(double, token, pod("bare", container()))
    assert code == 201, created
    assert created["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                             "limits": {"memory": "256Mi"}}
    assert created["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == \
        "LimitRanger plugin set: cpu, memory request for container base; memory limit for container base"


def test_without_a_limit_range_a_container_without_requests_is_refused_by_the_quota(start):
    _, double, token = start(names=("resourcequota",))
    message = refused(create(double, token, pod("bare", container())), 403, "Forbidden")
    assert message == ('pods "bare" is forbidden: failed quota: airflow-kpo-runner: must specify limits.memory for: base; '
                       "requests.cpu for: base; requests.memory for: base")
    message = refused(create(double, token, pod("hello-remote-1", *EXAMPLE)), 403, "Forbidden")
    assert message.endswith("must specify limits.memory for: airflow-xcom-sidecar"), "the sidecar sets no limit"
    assert double.created_pods == []
    code, created = create(double, token, pod("sized", container(requests={"cpu": "1", "memory": "1Gi"},
                                                                  limits={"memory": "1Gi"})))
    assert code == 201, "positive control: a container with its own requests and limit needs no default"


def test_a_request_above_the_default_limit_is_invalid(start):
    _, double, token = start()
    message = refused(create(double, token, pod("big", container(requests={"memory": "512Mi"}))), 422, "Invalid")
    assert message == ('Pod "big" is invalid: spec.containers[0].resources.requests[memory]: Invalid value: "512Mi": '
                       "must be less than or equal to memory limit of 256Mi")
    code, _ = create(double, token, pod("big", container(requests={"memory": "512Mi"}, limits={"memory": "1Gi"})))
    assert code == 201, "positive control: with its own limit"


def test_requests_default_to_the_containers_own_limits(start):
    _, double, token = start(names=("resourcequota",))
    code, created = create(double, token, pod("limited", container(limits={"cpu": "2", "memory": "1Gi"})))
    assert code == 201, created
    assert created["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "2", "memory": "1Gi"}
    assert "annotations" not in created["metadata"], "defaulting, not the LimitRanger"


def test_limit_range_rules_the_double_does_not_enforce_are_refused_when_loading(render):
    project = render(GENERIC)
    limit_range = manifest(project, "resource-defaults")
    limit_range["spec"]["limits"][0]["max"] = {"memory": "1Gi"}
    with pytest.raises(ValueError, match="not simulated"):
        ApiDouble("airflow-jobs", [], [], namespace_limits=[limit_range])
    quota = manifest(project, "resourcequota")
    quota["spec"]["scopes"] = ["NotBestEffort"]
    with pytest.raises(ValueError, match="not simulated"):
        ApiDouble("airflow-jobs", [], [], namespace_limits=[quota])


# -- ResourceQuota ---------------------------------------------------------------------------------
def test_the_21st_pod_is_refused_and_a_deleted_one_frees_its_place(start):
    _, double, token = start()
    for i in range(20):
        code, body = create(double, token, pod(f"loop-{i}", *EXAMPLE))
        assert code == 201, (i, body)
    message = refused(create(double, token, pod("loop-20", *EXAMPLE)), 403, "Forbidden")
    assert message == 'pods "loop-20" is forbidden: exceeded quota: airflow-kpo-runner, requested: pods=1, used: pods=20, ' \
                      "limited: pods=20"
    assert quota_status(double, token)["used"]["pods"] == "20"
    code, _ = call(double, "DELETE", "/api/v1/namespaces/airflow-jobs/pods/loop-0", token)
    assert code == 200
    code, _ = create(double, token, pod("loop-20", *EXAMPLE))
    assert code == 201, "positive control: a deleted pod no longer counts"


def test_finished_pods_no_longer_count(start):
    _, double, token = start(pending_seconds=0.05)
    for i in range(20):
        assert create(double, token, pod(f"done-{i}", container()))[0] == 201
    deadline = time.time() + 30
    while any(p["status"]["phase"] not in ("Succeeded", "Failed") for p in double.live_pods()):
        assert time.time() < deadline, "pods did not finish"
        time.sleep(0.05)
    assert len(double.live_pods()) == 20, "finished, not deleted"
    assert quota_status(double, token)["used"]["pods"] == "0"
    assert create(double, token, pod("done-20", container()))[0] == 201


def test_a_gpu_loop_stops_at_the_gpu_quota(start):
    _, double, token = start()
    gpu = container(requests={"cpu": "500m", "memory": "1Gi"}, limits={"memory": "2Gi", "nvidia.com/gpu": "1"})
    code, created = create(double, token, pod("gpu-0", gpu))
    assert code == 201, created
    assert created["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1", "request from the limit"
    message = refused(create(double, token, pod("gpu-1", gpu)), 403, "Forbidden")
    assert message == ('pods "gpu-1" is forbidden: exceeded quota: airflow-kpo-runner, requested: requests.nvidia.com/gpu=1, '
                       "used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1")
    assert create(double, token, pod("cpu-only", *EXAMPLE))[0] == 201, "positive control: pods without a GPU still fit"


def test_the_gpu_project_allows_two_gpus_not_three(start, render):
    # The GPU project's rendered limits, with the generic project's ServiceAccount RBAC.
    _, double, token = start(limits=limits_of(render(GPU), "resource-defaults", "resourcequota"))
    assert quota_status(double, token)["hard"]["requests.nvidia.com/gpu"] == "2"
    gpu = container(requests={"cpu": "500m", "memory": "1Gi"}, limits={"memory": "2Gi", "nvidia.com/gpu": "1"})
    assert [create(double, token, pod(f"gpu-{i}", gpu))[0] for i in range(2)] == [201, 201]
    message = refused(create(double, token, pod("gpu-2", gpu)), 403, "Forbidden")
    assert "used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=2" in message


def test_every_exceeded_resource_is_named_and_no_other(start):
    _, double, token = start()
    huge = container(requests={"cpu": "9", "memory": "20Gi"}, limits={"memory": "40Gi"})
    message = refused(create(double, token, pod("huge", huge)), 403, "Forbidden")
    assert message == ('pods "huge" is forbidden: exceeded quota: airflow-kpo-runner, '
                       "requested: limits.memory=40Gi,requests.cpu=9,requests.memory=20Gi, "
                       "used: limits.memory=0,requests.cpu=0,requests.memory=0, "
                       "limited: limits.memory=32Gi,requests.cpu=8,requests.memory=16Gi")
    fits = container(requests={"cpu": "8", "memory": "16Gi"}, limits={"memory": "32Gi"})
    assert create(double, token, pod("fits", fits))[0] == 201, "positive control: exactly the quota fits"
    message = refused(create(double, token, pod("one-more", container(requests={"cpu": "1m", "memory": "1Mi"},
                                                                      limits={"memory": "1Mi"}))), 403, "Forbidden")
    assert "requested: limits.memory=1Mi,requests.cpu=1m,requests.memory=1Mi" in message
    assert "pods=" not in message, "pods (2 of 20) is not exceeded"


def test_without_a_quota_nothing_is_counted(start):
    _, double, token = start(names=("resource-defaults",))
    assert [create(double, token, pod(f"p-{i}", *EXAMPLE))[0] for i in range(21)] == [201] * 21
    code, body = call(double, "GET", "/api/v1/namespaces/airflow-jobs/resourcequotas/airflow-kpo-runner", token)
    assert (code, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'resourcequotas "airflow-kpo-runner" not found'


# -- reading the objects: RBAC with resourceNames -------------------------------------------------------
def test_the_bound_account_reads_the_quota_and_the_limit_range_by_name(start):
    _, double, token = start()
    code, limit_range = call(double, "GET", "/api/v1/namespaces/airflow-jobs/limitranges/airflow-kpo-runner", token)
    assert code == 200, limit_range
    (item,) = limit_range["spec"]["limits"]
    assert item["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"} and item["default"] == {"memory": "256Mi"}
    assert quota_status(double, token)["used"]["pods"] == "0"


@pytest.mark.parametrize(("path", "verb", "resource"), [
    ("/api/v1/namespaces/airflow-jobs/resourcequotas/another", "get", 'resourcequotas "another"'),
    ("/api/v1/namespaces/airflow-jobs/limitranges/another", "get", 'limitranges "another"'),
    ("/api/v1/namespaces/airflow-jobs/resourcequotas", "list", "resourcequotas"),
], ids=["another-quota", "another-limitrange", "list"])
def test_reading_anything_but_the_named_objects_is_403(start, path, verb, resource):
    project, double, token = start()
    message = refused(call(double, "GET", path, token), 403, "Forbidden")
    assert message == (f'{resource} is forbidden: User "system:serviceaccount:airflow-jobs:airflow-kpo-runner" cannot '
                       f'{verb} resource "{resource.split()[0]}" in API group "" in the namespace "airflow-jobs"')


def test_without_the_roles_rule_the_quota_is_403(start, render):
    role = manifest(render(GENERIC), "role")
    role["rules"] = [rule for rule in role["rules"] if "resourceNames" not in rule]
    _, double, token = start(role=role)
    message = refused(call(double, "GET", "/api/v1/namespaces/airflow-jobs/resourcequotas/airflow-kpo-runner", token),
                      403, "Forbidden")
    assert 'cannot get resource "resourcequotas"' in message
    _, double, token = start()
    unbound = double.sa_tokens.mint("airflow-jobs", "not-bound", ttl=600)
    message = refused(call(double, "GET", "/api/v1/namespaces/airflow-jobs/resourcequotas/airflow-kpo-runner", unbound),
                      403, "Forbidden")
    assert 'User "system:serviceaccount:airflow-jobs:not-bound" cannot get' in message
    quota_status(double, token)  # positive control: the bound account, on the same double


def test_access_reviews_honour_resource_names(start):
    _, double, token = start()

    def review(name: str) -> bool:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {
            "namespace": "airflow-jobs", "verb": "get", "resource": "resourcequotas", "name": name}}}
        return call(double, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", token, body)[1]["status"]["allowed"]

    assert review("airflow-kpo-runner") is True
    assert review("another") is False
    assert review("") is False, "a rule with resourceNames never allows an unnamed request"

