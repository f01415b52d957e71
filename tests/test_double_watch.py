"""The API double's watch on events can say no, and streams the way the API server does.

A GET of a collection with ``watch=true`` is authorized as RBAC verb ``watch`` (not ``list``):
without it, a 403 Status names the verb exactly as the API server words it; with it, the
answer is a chunked stream of one ``{"type": "ADDED", "object": {...}}`` line per event, held
open until ``timeoutSeconds`` or until the client goes away. Each refusal has a positive
control next to it; the last tests drive the pinned provider's own async hook
(cncf-kubernetes 10.25 ``AsyncKubernetesHook.watch_pod_events``, kubernetes_asyncio's Watch)
against it, so the client and the double agree on the wire format and on the fallback.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import http.client
import json
import ssl
import time

import pytest
import yaml
from kube_api_double import ApiDouble

GENERIC = {"cloud": "generic", "xcom": False}


def manifest(project, name: str) -> dict:
    return yaml.safe_load((project.path / "k8s" / f"{name}.yaml").read_text())


def events_verbs(role: dict, verbs: set[str]) -> dict:
    """The Role with its events rule granting exactly ``verbs``."""
    role = copy.deepcopy(role)
    (rule,) = [r for r in role["rules"] if r["resources"] == ["events"]]
    rule["verbs"] = sorted(verbs)
    return role


@pytest.fixture
def cluster(render):
    """Start a double with the rendered Role, its events rule granting the verbs asked for."""
    project = render(GENERIC)
    (subject,) = manifest(project, "rolebinding")["subjects"]
    started = []

    def start(verbs: set[str]) -> tuple[ApiDouble, str]:
        double = ApiDouble(project.answers["namespace"], [events_verbs(manifest(project, "role"), verbs)],
                           [manifest(project, "rolebinding")], pending_seconds=60).start()  # watched while Pending
        started.append(double)
        return double, double.sa_tokens.mint(subject["namespace"], subject["name"], ttl=600)

    yield project, subject, start
    for double in started:
        double.stop()


def connect(double: ApiDouble) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cadata=base64.b64decode(double.ca_data).decode())
    host, port = double.url.removeprefix("https://").split(":")
    return http.client.HTTPSConnection(host, int(port), context=context, timeout=30)


def get(double: ApiDouble, path: str, token: str) -> tuple[int, list[dict], float]:
    """GET, read to the end; the body's JSON lines (a watch) or its one JSON document, and seconds taken."""
    started = time.time()
    conn = connect(double)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, [json.loads(line) for line in body.splitlines() if line.strip()], time.time() - started


def recorded(double: ApiDouble, verb: str, timeout: float = 10) -> dict:
    """The double's record of the last request with ``verb``, written just after its answer's last byte."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with double.lock:
            found = [r for r in double.requests if r.get("verb") == verb]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {verb} request recorded within {timeout} s")


def a_pod(double: ApiDouble) -> str:
    pod = double.create_pod(double.namespace, {"metadata": {"name": "watched"}, "spec": {"containers": [
        {"name": "base", "image": "busybox", "command": ["true"]}]}})
    return pod["metadata"]["name"]


def events_path(double: ApiDouble, query: str) -> str:
    return f"/api/v1/namespaces/{double.namespace}/events?{query}"


def test_list_events_with_the_list_verb_is_200(cluster):
    """Positive control: the Role as rendered lists events."""
    _, _, start = cluster
    double, token = start({"list"})
    name = a_pod(double)
    code, (body,), _ = get(double, events_path(double, f"fieldSelector=involvedObject.name%3D{name}"), token)
    assert (code, body["kind"]) == (200, "EventList")
    assert [e["reason"] for e in body["items"]] == ["Scheduled", "Pulled", "Started"]
    assert recorded(double, "list")["resource"] == "events"


@pytest.mark.parametrize("flag", ["true", "1"])
def test_watch_events_without_the_watch_verb_is_403_naming_the_verb(cluster, flag):
    _, subject, start = cluster
    double, token = start({"list"})
    code, (status,), _ = get(double, events_path(double, f"watch={flag}&timeoutSeconds=5"), token)
    assert (code, status["reason"], status["code"]) == (403, "Forbidden", 403)
    user = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
    assert status["message"] == (f'events is forbidden: User "{user}" cannot watch resource "events" '
                                 f'in API group "" in the namespace "{double.namespace}"')
    assert recorded(double, "watch")["status"] == 403


def test_watch_events_with_the_verb_streams_added_events_until_timeout_seconds(cluster):
    _, _, start = cluster
    double, token = start({"list", "watch"})
    name = a_pod(double)
    code, lines, took = get(double, events_path(
        double, f"watch=true&fieldSelector=involvedObject.name%3D{name}&timeoutSeconds=2"), token)
    assert code == 200
    assert [line["type"] for line in lines] == ["ADDED"] * 3
    assert [line["object"]["reason"] for line in lines] == ["Scheduled", "Pulled", "Started"]
    assert all(line["object"]["kind"] == "Event" and line["object"]["involvedObject"]["name"] == name for line in lines)
    assert 2 <= took < 4, f"held open until timeoutSeconds=2, not {took:.1f} s"
    assert recorded(double, "watch")["status"] == 200


def test_watch_from_a_resource_version_sends_only_newer_events(cluster):
    _, _, start = cluster
    double, token = start({"list", "watch"})
    name = a_pod(double)
    first = double.events_for(name)[0]["metadata"]["resourceVersion"]
    _, lines, _ = get(double, events_path(
        double, f"watch=true&fieldSelector=involvedObject.name%3D{name}&resourceVersion={first}&timeoutSeconds=1"), token)
    assert [line["object"]["reason"] for line in lines] == ["Pulled", "Started"]


def test_watch_ends_when_the_client_closes(cluster):
    _, _, start = cluster
    double, token = start({"list", "watch"})
    name = a_pod(double)
    conn = connect(double)
    conn.request("GET", events_path(double, f"watch=true&fieldSelector=involvedObject.name%3D{name}&timeoutSeconds=60"),
                 headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    assert json.loads(response.readline())["type"] == "ADDED"
    conn.close()
    assert recorded(double, "watch", timeout=15)["held"] < 10, "the stream ended when the client left, not at timeoutSeconds=60"


# -- the provider's own client against the double ------------------------------------------------
def watch_with_the_provider(double: ApiDouble, token: str, name: str) -> list[str]:
    """Events of ``name`` through cncf-kubernetes' AsyncKubernetesHook.watch_pod_events."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": double.url, "certificate-authority-data": double.ca_data}}],
              "users": [{"name": "u", "user": {"token": token}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": double.namespace}}]}
    hook = AsyncKubernetesHook(config_dict=config, in_cluster=False, conn_id=None)
    seen: list[str] = []

    async def first_three() -> list[str]:
        # It re-watches until the pod ends; the trigger cancels it once the pod has started.
        async for event in hook.watch_pod_events(name, double.namespace, timeout_seconds=1):
            seen.append(event.reason)
            if len(seen) == 3:
                break
        return seen

    reasons = asyncio.run(asyncio.wait_for(first_three(), timeout=15))
    recorded(double, "watch")  # a watch is recorded when its stream ends, just after the client left
    return reasons


def test_provider_falls_back_to_polling_after_the_403(cluster, capfd):
    _, _, start = cluster
    double, token = start({"list"})
    name = a_pod(double)
    reasons = watch_with_the_provider(double, token, name)
    assert reasons == ["Scheduled", "Pulled", "Started"], "events still arrive, by listing"
    calls = [(r.get("verb"), r.get("resource"), r["status"]) for r in double.requests if r.get("resource") == "events"]
    assert calls == [("watch", "events", 403), ("list", "events", 200)]
    logged = capfd.readouterr().out  # Airflow's logging writes to stdout
    assert "Kubernetes API does not permit watching events; falling back to polling" in logged
    assert 'cannot watch resource "events"' in logged, "the Status message reaches the task log"


def test_provider_watches_with_the_verb(cluster, capfd):
    _, _, start = cluster
    double, token = start({"list", "watch"})
    name = a_pod(double)
    reasons = watch_with_the_provider(double, token, name)
    assert reasons == ["Scheduled", "Pulled", "Started"]
    calls = [(r.get("verb"), r["status"]) for r in double.requests if r.get("resource") == "events"]
    assert calls == [("watch", 200)], "one watch, no 403, no list"
    assert "falling back to polling" not in capfd.readouterr().out
