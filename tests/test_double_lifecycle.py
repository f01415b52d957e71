"""The API double's pod lifecycle can say no: the cluster stopping a pod on its own.

tests/test_e2e_guardrails.py trusts the double to stop a pod at its ``activeDeadlineSeconds``
and to take a pod away as a spot reclaim does. Each rule is shown here through the double's
real interface (HTTPS, verified with its CA, as the rendered project's ServiceAccount), next to
a positive control, checking the reason Kubernetes would give: the kubelet's DeadlineExceeded,
counted from the pod's start on a node; an eviction (the pod deleted: 404); a graceful node
shutdown (Failed, Terminated, the object kept); no exec into a completed pod.
"""

from __future__ import annotations

import time

import pytest
import yaml
from kube_api_double import ApiDouble
from kube_api_double.client import call

GENERIC = {"cloud": "generic", "xcom": True}  # its Role allows pods/exec
SLEEPS = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')"
IGNORES_SIGTERM = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                   "print('started', flush=True)\ntime.sleep(60)")
QUICK = "print('done')"


def manifest(project, name: str) -> dict:
    return yaml.safe_load((project.path / "k8s" / f"{name}.yaml").read_text())


@pytest.fixture
def cluster(render):
    """The double with the rendered generic project's Role and RoleBinding, and a token of its ServiceAccount."""
    project = render(GENERIC)
    (subject,) = manifest(project, "rolebinding")["subjects"]
    with ApiDouble(project.answers["namespace"], [manifest(project, "role")], [manifest(project, "rolebinding")],
                   pending_seconds=0.1) as double:
        double.kill_grace_seconds = 0.5
        yield double, double.sa_tokens.mint(subject["namespace"], subject["name"], ttl=600)




def create(cluster, name: str, script: str, deadline: int | None = None, **spec) -> None:
    double, token = cluster
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", **spec, "containers": [
                {"name": "base", "image": "python:3.12-slim", "command": ["python", "-c"], "args": [script]}]}}
    if deadline is not None:
        body["spec"]["activeDeadlineSeconds"] = deadline
    code, created = call(double, "POST", f"/api/v1/namespaces/{double.namespace}/pods", token, body)
    assert code == 201, created


def get(cluster, name: str) -> tuple[int, dict]:
    double, token = cluster
    return call(double, "GET", f"/api/v1/namespaces/{double.namespace}/pods/{name}", token)


def wait_phase(cluster, name: str, phases: tuple[str, ...], timeout: float = 20) -> dict:
    deadline = time.time() + timeout
    while True:
        code, pod = get(cluster, name)
        if code == 200 and pod["status"]["phase"] in phases:
            return pod
        assert time.time() < deadline, f"{name} never reached {phases}: {code} {pod.get('status')}"
        time.sleep(0.1)


def wait_started(cluster, name: str) -> None:
    """Running, and its script has printed its first line."""
    wait_phase(cluster, name, ("Running",))
    deadline = time.time() + 20
    while cluster[0].pod_log_lines(name) != ["started"]:
        assert time.time() < deadline, f"{name} never started its script"
        time.sleep(0.05)


def base_state(pod: dict) -> dict:
    (base,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == "base"]
    return base["state"]


def seconds(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- activeDeadlineSeconds -------------------------------------------------------------------------
def test_deadline_positive_control_pods_within_or_without_a_deadline_succeed(cluster):
    create(cluster, "within", QUICK, deadline=30)
    create(cluster, "without", "import time; time.sleep(2.5); print('done')")  # longer than the next test's deadline
    for name in ("within", "without"):
        pod = wait_phase(cluster, name, ("Succeeded", "Failed"))
        assert pod["status"]["phase"] == "Succeeded" and "reason" not in pod["status"], pod["status"]
        assert base_state(pod)["terminated"]["exitCode"] == 0
    assert cluster[0].pod_log_lines("without") == ["done"]


def test_deadline_exceeded_fails_the_pod_and_kills_its_script(cluster):
    create(cluster, "runaway", SLEEPS, deadline=2)
    pod = wait_phase(cluster, "runaway", ("Running",))
    assert pod["spec"]["activeDeadlineSeconds"] == 2
    pod = wait_phase(cluster, "runaway", ("Succeeded", "Failed"), timeout=10)
    status = pod["status"]
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    terminated = base_state(pod)["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (143, "Error"), "SIGTERM, as the kubelet sends first"
    assert 2 <= seconds(terminated["finishedAt"]) - seconds(status["startTime"]) <= 4
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"
    process = cluster[0].pods["runaway"].process
    assert process.poll() is not None, "the script no longer runs"
    assert cluster[0].pod_log_lines("runaway") == ["started"]


def test_deadline_kills_a_script_that_ignores_sigterm_after_the_grace_period(cluster):
    create(cluster, "stubborn", IGNORES_SIGTERM, deadline=1)
    pod = wait_phase(cluster, "stubborn", ("Succeeded", "Failed"), timeout=10)
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert base_state(pod)["terminated"]["exitCode"] == 137, "SIGKILL after the grace period"


def test_deadline_counts_from_the_pods_start_on_a_node_not_from_its_creation(render):
    """Pending for a node longer than its deadline, the pod still gets its whole deadline once
    it starts (Kubernetes counts from status.startTime), and finishes."""
    project = render(GENERIC)
    nodes = []
    (subject,) = manifest(project, "rolebinding")["subjects"]
    with ApiDouble(project.answers["namespace"], [manifest(project, "role")], [manifest(project, "rolebinding")],
                   pending_seconds=0.1, nodes=lambda: nodes) as double:
        cluster = (double, double.sa_tokens.mint(subject["namespace"], subject["name"], ttl=600))
        create(cluster, "waits", "import time; time.sleep(0.5); print('done')", deadline=1,
               nodeSelector={"pool": "gpu"})
        time.sleep(2)
        assert get(cluster, "waits")[1]["status"]["phase"] == "Pending"
        nodes.append({"pool": "gpu"})
        pod = wait_phase(cluster, "waits", ("Succeeded", "Failed"))
        assert pod["status"]["phase"] == "Succeeded", pod["status"]


# -- the cluster taking a pod away -------------------------------------------------------------------
def test_eviction_deletes_the_pod_and_kills_its_script(cluster):
    double, token = cluster
    create(cluster, "spot", SLEEPS)
    create(cluster, "neighbour", "import time; time.sleep(1); print('done')")  # positive control
    wait_started(cluster, "spot")
    double.evict("spot")
    code, status = get(cluster, "spot")
    assert (code, status["reason"], status["message"]) == (404, "NotFound", 'pods "spot" not found')
    listed = call(double, "GET", f"/api/v1/namespaces/{double.namespace}/pods", token)[1]["items"]
    assert [p["metadata"]["name"] for p in listed] == ["neighbour"]
    last = double.pods["spot"].body  # what the API server held just before it removed the object
    assert last["metadata"]["deletionTimestamp"]
    assert {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting"}.items() <= next(
        c for c in last["status"]["conditions"] if c["type"] == "DisruptionTarget").items()
    assert last["status"]["phase"] == "Failed" and base_state(last)["terminated"]["exitCode"] == 143
    assert double.pods["spot"].process.poll() is not None and double.pod_log_lines("spot") == ["started"]
    assert wait_phase(cluster, "neighbour", ("Succeeded", "Failed"))["status"]["phase"] == "Succeeded"


def test_node_shutdown_fails_the_pod_and_keeps_it(cluster):
    double, _ = cluster
    create(cluster, "preempted", SLEEPS)
    wait_started(cluster, "preempted")
    double.shut_down_node("preempted")
    code, pod = get(cluster, "preempted")
    assert code == 200, "the object stays until it is deleted"
    status = pod["status"]
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed", "Terminated", "Pod was terminated in response to imminent node shutdown.")
    disruption = next(c for c in status["conditions"] if c["type"] == "DisruptionTarget")
    assert (disruption["status"], disruption["reason"]) == ("True", "TerminationByKubelet")
    assert base_state(pod)["terminated"]["exitCode"] == 143
    assert double.pod_log_lines("preempted") == ["started"]


def test_a_finished_pod_is_never_stopped_again(cluster):
    """Positive control for the two above: a pod that already succeeded keeps its result."""
    double, _ = cluster
    create(cluster, "finished", QUICK, deadline=1)
    wait_phase(cluster, "finished", ("Succeeded",))
    double.shut_down_node("finished")
    time.sleep(1.5)  # past its deadline too
    pod = get(cluster, "finished")[1]
    assert pod["status"]["phase"] == "Succeeded" and "reason" not in pod["status"]
    assert base_state(pod)["terminated"]["exitCode"] == 0


def test_no_exec_into_a_completed_pod(cluster):
    double, token = cluster
    create(cluster, "running", SLEEPS)
    create(cluster, "gone", SLEEPS)
    wait_phase(cluster, "running", ("Running",))
    wait_phase(cluster, "gone", ("Running",))
    double.shut_down_node("gone")
    exec_path = "/api/v1/namespaces/{}/pods/{}/exec?container=base&command=true"
    code, status = call(double, "POST", exec_path.format(double.namespace, "running"), token)
    assert (code, status["message"]) == (400, "upgrade required"), "a running pod: the exec route is reached"
    code, status = call(double, "POST", exec_path.format(double.namespace, "gone"), token)
    assert (code, status["reason"], status["message"]) == (
        400, "BadRequest", "cannot exec into a container in a completed pod; current phase is Failed")
