"""Guardrails, end to end: a pod never outlives its task, and a pod the cluster takes away
(a reclaimed spot node, a node shut down) is retried with a new pod, never taken for a success.

Real: the rendered DAGs and include/remote_pod.py, Airflow 3.3 with the pinned providers
(tests/e2e_harness.py). Simulated (tests/kube_api_double): the kubelet, which enforces
``activeDeadlineSeconds`` from the pod's start (Failed, DeadlineExceeded, the script killed),
and the cluster taking a pod away: ``evict`` (the Eviction API, as a spot reclaim on EKS drains
the node: the pod is deleted) and ``shut_down_node`` (graceful node shutdown, as on GKE spot
VMs: the pod stays, Failed, reason Terminated). tests/test_double_lifecycle.py shows each rule
refusing. The only edits to the projects: shorter timeouts, retries and polls (``variant``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import airflow_env
from e2e_harness import Cluster, finish, migrate, variant

GENERIC = {"cloud": "generic", "xcom": True}
AWS_GPU = {"cloud": "aws", "xcom": False, "gpu_node_group": True}
# EksPodOperator: amazon 9.39 defers without the task's execution_timeout (see below).
AWS_NATIVE = {"cloud": "aws", "xcom": False, "pod_operator": "native", "gpu_node_group": True}
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"

BUILD_PODS = r"""
import json
from datetime import datetime, timedelta
from airflow.sdk import DAG
from kubernetes.client import models as k8s
from include.remote_pod import CLUSTER_ARGS, RemotePodOperator
start = datetime(2025, 1, 1)
with DAG("with_default_timeout", schedule=None, start_date=start,
         default_args={"execution_timeout": timedelta(minutes=30)}):
    tasks = {
        "execution_timeout 90.5 s": RemotePodOperator(task_id="a", image="x", execution_timeout=timedelta(seconds=90.5),
                                                      **CLUSTER_ARGS),
        "explicit 60 s wins": RemotePodOperator(task_id="b", image="x", execution_timeout=timedelta(hours=1),
                                                active_deadline_seconds=60, **CLUSTER_ARGS),
        "default_args 30 min": RemotePodOperator(task_id="c", image="x", **CLUSTER_ARGS),
        "pod template 77 s wins": RemotePodOperator(
            task_id="d", image="x", **CLUSTER_ARGS,
            full_pod_spec=k8s.V1Pod(spec=k8s.V1PodSpec(containers=[], active_deadline_seconds=77))),
    }
with DAG("without_timeout", schedule=None, start_date=start):
    tasks["no execution_timeout"] = RemotePodOperator(task_id="e", image="x", **CLUSTER_ARGS)
print(json.dumps({k: t.build_pod_request_obj(dry_run=True).spec.active_deadline_seconds for k, t in tasks.items()}))
"""
# The provider's trigger_reentry after the trigger saw the pod succeed, the pod gone since (404 from
# the API double): what each operator does with it.
RESUME_ON_A_GONE_POD = r"""
import json, sys
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from include.remote_pod import CLUSTER_ARGS, RemotePodOperator
event = {"status": "success", "name": "hello-remote-gone", "namespace": CLUSTER_ARGS["namespace"]}
outcome = {}
for cls in (KubernetesPodOperator, RemotePodOperator):
    op = cls(task_id="t", image="x", do_xcom_push=True, deferrable=True, **CLUSTER_ARGS)
    try:
        outcome[cls.__name__] = ["returned", op.trigger_reentry({}, event)]
    except Exception as err:
        outcome[cls.__name__] = ["raised", f"{type(err).__name__}: {err}"]
print(json.dumps(outcome))
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home-guardrails"))


def wait_for(condition, timeout: float = 120, what: str = "the pod") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def running_pod(cluster: Cluster) -> str | None:
    return next((p["metadata"]["name"] for p in cluster.double.live_pods() if p["status"]["phase"] == "Running"), None)


def base_exit_code(body: dict) -> int:
    (base,) = [c for c in body["status"]["containerStatuses"] if c["name"] == "base"]
    return base["state"]["terminated"]["exitCode"]


def seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- a pod never outlives its task ---------------------------------------------------------------
@pytest.mark.parametrize("answers", [GENERIC, AWS_NATIVE, {"cloud": "gcp", "xcom": True, "pod_operator": "native"}],
                         ids=["kubernetes", "eks-native", "gke-native"])
def test_pod_deadline_follows_execution_timeout(render, tmp_path, answers):
    """Unit level, every operator RemotePodOperator can be: the pod spec Airflow would send."""
    project = render(answers).path
    done = subprocess.run([sys.executable, "-c", BUILD_PODS], cwd=project, capture_output=True, text=True,
                          env=airflow_env(project, tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "execution_timeout 90.5 s": 91,  # rounded up: never shorter than the task's own limit
        "explicit 60 s wins": 60,
        "default_args 30 min": 1800,
        "pod template 77 s wins": 77,
        "no execution_timeout": 24 * 3600,  # POD_DEADLINE_WITHOUT_TIMEOUT
    }


def test_pod_deadline_stops_the_pod_when_airflow_is_gone(render, airflow_home, tmp_path):
    """Deferrable remote_kpo, execution_timeout 6 s, a pod that would run a minute: Airflow is
    killed while the pod runs, and the cluster stops the pod on its own 6 s after it started."""
    project = variant(render(GENERIC).path, tmp_path, retries=0, execution_timeout=6)
    with Cluster(project, airflow_home, tmp_path, double_options={"extra_run_seconds": 60}) as cluster:
        process = cluster.start("remote_kpo")
        wait_for(lambda: running_pod(cluster))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        (sent,) = cluster.double.created_pods
        assert sent["spec"]["activeDeadlineSeconds"] == 6
        pod = cluster.double.pods[sent["metadata"]["name"]]
        wait_for(pod.terminal.is_set, timeout=30, what="the deadline")
        status = pod.body["status"]
        assert (status["phase"], status["reason"], status["message"]) == ("Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
        (base,) = [c for c in status["containerStatuses"] if c["name"] == "base"]
        lived = seconds(base["state"]["terminated"]["finishedAt"]) - seconds(status["startTime"])
        assert 5 <= lived <= 9, f"stopped {lived:.0f} s after its start, deadline 6 s"
        assert base_exit_code(pod.body) == 143, "killed by SIGTERM"
        lines = len(pod.logs)
        time.sleep(1.5)
        assert len(pod.logs) == lines, "nothing runs in the pod any more"


def test_deferred_eks_pod_operator_fails_at_the_pod_deadline(render, airflow_home, tmp_path):
    """Airflow alive. amazon 9.39's EksPodOperator defers with a trigger that has no deadline
    (its invoke_defer_method drops execution_timeout) and Airflow 3.3 does not time out deferred
    tasks, so without the pod deadline this task would wait out the whole one-minute pod.
    (15 s: EksPodOperator's own sign-in before it defers takes several seconds here.)"""
    project = variant(render(AWS_NATIVE).path, tmp_path, retries=0, execution_timeout=15)
    with Cluster(project, airflow_home, tmp_path, double_options={"extra_run_seconds": 60}) as cluster:
        result = cluster.run("remote_kpo")
        assert result.state == "failed", result.log[-6000:]
        (sent,) = cluster.double.created_pods
        assert sent["spec"]["activeDeadlineSeconds"] == 15
        assert "running trigger in line" in result.log, "the task deferred"
        assert "Pod phase: Failed, reason: DeadlineExceeded" in result.log, "the log says why"
        assert "still running, tick 40" not in result.log, "the pod did not run on"
        assert cluster.double.live_pods() == [], "the failed pod is deleted"


# -- a pod the cluster takes away ----------------------------------------------------------------
def test_upstream_pod_gone_before_resume_succeeds_without_xcom(render, airflow_home, tmp_path):
    """KNOWN UPSTREAM LIMITATION (cncf-kubernetes 10.25), pinned: when the pod is deleted after the
    trigger saw it succeed and before the task resumes, the provider's operator returns no XCom
    and the task succeeds; the downstream task then fails on a missing XCom, and no retry of this
    task can happen. RemotePodOperator (NoXComNoSuccess) fails the try instead. When the first
    assertion fails, the provider has changed: drop NoXComNoSuccess if it now raises."""
    with Cluster(render(GENERIC).path, airflow_home, tmp_path) as cluster:
        done = subprocess.run([sys.executable, "-c", RESUME_ON_A_GONE_POD], cwd=cluster.project, capture_output=True,
                              text=True, env=cluster.env(), timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
        assert outcome["KubernetesPodOperator"] == ["returned", None]
        assert outcome["RemotePodOperator"] == ["raised", "AirflowException: pod hello-remote-gone was deleted before "
                                                "its XCom was read (evicted, node reclaimed?); a retry runs a new pod"]
        gets = [r for r in cluster.double.requests if r.get("name") == "hello-remote-gone"]
        assert gets and {r["status"] for r in gets} == {404}, "both asked the cluster, which said 404"


def test_evicted_pods_are_retried_with_new_pods(render, airflow_home, tmp_path):
    """Spot reclaims on EKS: the pod is evicted (deleted) mid-run, then its retry's pod just
    after the trigger saw it finish and before the task read its XCom. Each try fails; the third
    pod, new again, exits 0 and its XCom reaches the downstream task."""
    project = variant(render(GENERIC).path, tmp_path, retries=2, retry_delay=1)
    with Cluster(project, airflow_home, tmp_path, double_options={"extra_run_seconds": 3}) as cluster:
        process = cluster.start("remote_kpo", PYTHONUNBUFFERED="1")  # read the task log as it comes
        wait_for(lambda: running_pod(cluster))
        first = running_pod(cluster)
        cluster.double.evict(first)
        wait_for(lambda: len(cluster.double.created_pods) == 2, what="the retry's pod")
        second = cluster.double.created_pods[1]["metadata"]["name"]
        lines = []
        for line in process.stdout:  # the second try's trigger fires only once its pod has finished
            lines.append(line)
            if "[DAG TEST] Trigger completed" in line and cluster.double.pods[second].base_done.is_set():
                cluster.double.evict(second)
                break
        result = finish(process)
        log = "".join(lines) + result.log
        assert result.succeeded, log[-6000:]
        names = [p["metadata"]["name"] for p in cluster.double.created_pods]
        assert len(set(names)) == 3 and names[:2] == [first, second], "every try made a new pod"
        assert f"{first} not found" in log, "the first try failed on the pod that was taken away"
        assert f"pod {second} was deleted before its XCom was read" in log, "the second try failed too"
        assert "Reusing existing pod" not in log
        third = cluster.double.pods[names[2]].body
        assert third["status"]["phase"] == "Succeeded" and base_exit_code(third) == 0
        assert log.count("the remote pod ran on") == 1, "the downstream task ran once, with the third pod's XCom"
        assert cluster.double.live_pods() == []


def test_node_shut_down_while_airflow_is_gone(render, airflow_home, tmp_path):
    """GKE spot VM reclaimed while the worker is gone: the pod is left Failed (Terminated).
    Airflow back, the task finds that pod and does not reattach to it: it deletes it and runs a
    new pod, which exits 0."""
    project = variant(render(GENERIC).path, tmp_path, retries=0)
    logical_date = "2026-02-03T04:05:06+00:00"
    with Cluster(project, airflow_home, tmp_path, double_options={"extra_run_seconds": 4}) as cluster:
        process = cluster.start("remote_kpo", logical_date)
        wait_for(lambda: running_pod(cluster))
        first = running_pod(cluster)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        cluster.double.shut_down_node(first)
        assert cluster.double.pods[first].body["status"]["reason"] == "Terminated"
        result = cluster.run("remote_kpo", logical_date=logical_date)
        assert result.succeeded, result.log[-6000:]
        first_pod, second_pod = cluster.double.created_pods
        assert second_pod["metadata"]["name"] != first
        assert f"Found terminated old matching pod {first}" in result.log and "Reusing existing pod" not in result.log
        retried = cluster.double.pods[second_pod["metadata"]["name"]].body
        assert retried["status"]["phase"] == "Succeeded" and base_exit_code(retried) == 0
        assert "the remote pod ran on" in result.log
        assert cluster.double.live_pods() == [], "the failed pod was deleted, not left behind"


def test_gpu_pod_lost_to_a_spot_reclaim_is_retried_on_the_same_node_group(render, airflow_home, tmp_path):
    project = tmp_path / "gpu" / render(AWS_GPU).path.name
    shutil.copytree(render(AWS_GPU).path, project)
    dag = project / "dags" / "remote_kpo_gpu.py"
    dag.write_text(dag.read_text().replace("POLL_SECONDS = 30", "POLL_SECONDS = 1"))
    with Cluster(project, airflow_home, tmp_path, double_options={"extra_run_seconds": 3}) as cluster:
        process = cluster.start("remote_kpo_gpu")
        wait_for(lambda: running_pod(cluster), timeout=300)
        first = running_pod(cluster)
        cluster.double.evict(first)
        result = finish(process)
        assert result.succeeded, result.log[-6000:]
        first_pod, second_pod = cluster.double.created_pods
        assert second_pod["metadata"]["name"] != first
        retried = cluster.double.pods[second_pod["metadata"]["name"]].body
        assert retried["status"]["phase"] == "Succeeded" and base_exit_code(retried) == 0
        actions = [c["action"] for c in cluster.eks_api.calls]
        assert actions.count("CreateNodegroup") == 1, "the retry ran on the node group already there"
        assert cluster.eks_api.nodegroups == {} and cluster.double.live_pods() == []
