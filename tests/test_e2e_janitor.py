"""The orphan-pod janitor (dags/remote_pod_janitor.py, include/janitor.py) against the API double.

End to end in real Airflow (generic cloud, the cheapest): a worker killed while its pod runs
leaves the pod behind; while the task instance is running the janitor keeps it, once the task
is failed it keeps it until the grace period has passed, then deletes it and logs it. Pods in
another namespace, without the project's label or of another project are never touched, and
the janitor calls nothing but list and delete on pods. Without Airflow: the janitor's sweep
with a Role of only pods list+delete works, and each of the two is needed. The API double's
rules the janitor relies on (pods are namespaced; a delete honours a uid precondition) are shown
refusing here too, each next to a positive control.

Pod ages are set in the double (creationTimestamp), not by changing the janitor's grace period.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml
from conftest import airflow_env
from e2e_harness import Cluster, migrate, variant
from kube_api_double import ApiDouble
from kube_api_double.client import call
from kube_api_double.server import now_iso

GENERIC = {"cloud": "generic", "xcom": False}
LOGICAL_DATE = "2026-01-02T03:04:05+00:00"
RUN_ID = f"manual__{LOGICAL_DATE}"  # the pod's run_id label is a shortened, hashed form of it
HOUR = 3600


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home"))


def manifest(project, name: str) -> dict:
    return yaml.safe_load((project.path / "k8s" / f"{name}.yaml").read_text())


def bound_token(project, double: ApiDouble) -> str:
    (subject,) = manifest(project, "rolebinding")["subjects"]
    return double.sa_tokens.mint(subject["namespace"], subject["name"], 600)


def seed_pod(double: ApiDouble, name: str, namespace: str, labels: dict, age: float = 0) -> dict:
    """A pod put on the cluster by someone else (an admin, another project), ``age`` seconds old."""
    body = double.create_pod(namespace, {"metadata": {"name": name, "labels": labels},
                                         "spec": {"containers": [{"name": "base", "image": "busybox",
                                                                  "command": ["sleep", "3600"]}]}})
    set_age(double, name, age)
    return body


def set_age(double: ApiDouble, name: str, seconds: float) -> None:
    with double.lock:
        double.pods[name].body["metadata"]["creationTimestamp"] = now_iso(time.time() - seconds)




# -- the double's rules the janitor relies on -------------------------------------------------
@pytest.fixture
def sa_double(render):
    project = render(GENERIC)
    with ApiDouble(project.answers["namespace"], [manifest(project, "role")], [manifest(project, "rolebinding")]) as double:
        yield project, double, bound_token(project, double)


def test_double_pods_are_namespaced(sa_double):
    """A pod of the same labels in another namespace is neither listed nor found by name here."""
    project, double, token = sa_double
    namespace = project.answers["namespace"]
    labels = project_label(project)
    seed_pod(double, "mine", namespace, labels)
    seed_pod(double, "theirs", "other-team", labels)
    code, listed = call(double, "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=app.kubernetes.io/part-of",
                        token)
    assert code == 200 and [p["metadata"]["name"] for p in listed["items"]] == ["mine"]
    code, status = call(double, "DELETE", f"/api/v1/namespaces/{namespace}/pods/theirs", token)
    assert (code, status["reason"], status["message"]) == (404, "NotFound", 'pods "theirs" not found')
    assert "theirs" in {p["metadata"]["name"] for p in double.live_pods()}
    assert call(double, "DELETE", f"/api/v1/namespaces/{namespace}/pods/mine", token)[0] == 200  # positive control
    assert [p["metadata"]["name"] for p in double.live_pods()] == ["theirs"]


def test_double_delete_honours_the_uid_precondition(sa_double):
    project, double, token = sa_double
    namespace = project.answers["namespace"]
    uid = seed_pod(double, "orphan", namespace, {})["metadata"]["uid"]
    path = f"/api/v1/namespaces/{namespace}/pods/orphan"
    code, status = call(double, "DELETE", path, token, {"preconditions": {"uid": "another-pods-uid"}})
    assert (code, status["reason"]) == (409, "Conflict") and "Precondition failed: UID in precondition" in status["message"]
    assert double.live_pods(), "not deleted"
    assert call(double, "DELETE", path, token, {"preconditions": {"uid": uid}})[0] == 200  # positive control
    assert double.live_pods() == []


# -- the janitor's sweep under RBAC, without Airflow ----------------------------------------------
SWEEP = r"""
import json, sys
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from kubernetes.client.exceptions import ApiException
from include import janitor
targets, states = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for url, ca_file, token, namespace in targets:
    config = Configuration(host=url)
    config.ssl_ca_cert, config.api_key = ca_file, {"authorization": f"Bearer {token}"}
    try:
        summary = janitor.sweep(CoreV1Api(ApiClient(config)), namespace, lambda **query: states)
        print(json.dumps({"deleted": summary.deleted, "kept": summary.kept}))
    except ApiException as err:
        print(json.dumps({"status": err.status, "message": json.loads(err.body)["message"]}))
"""
ROLES = {  # verbs on pods -> what the sweep does
    ("list", "delete"): "deleted",
    ("list",): 'cannot delete resource "pods"',
    ("delete",): 'cannot list resource "pods"',
}


def only_pods(project, *verbs: str) -> dict:
    """The rendered Role (same name, same binding) with one rule: these verbs on pods."""
    return {**manifest(project, "role"), "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": list(verbs)}]}


def project_label(project) -> dict:
    """POD_LABELS as the rendered project gives them under `astro dev` (airflow_instance: local)."""
    return {"app.kubernetes.io/managed-by": "airflow", "app.kubernetes.io/part-of": project.path.name.replace("_", "-"),
            "airflow_instance": "local"}


def test_sweep_needs_pods_list_and_delete_and_nothing_else(render, tmp_path):
    """One API double per Role; the rendered include/janitor.py sweeps each in one process
    (importing Airflow's label sanitizer takes seconds) with only the image's packages."""
    project = render(GENERIC)
    namespace = project.answers["namespace"]
    run_id = "nightly_2026_01_01"  # a valid label value as it is (the end-to-end test covers hashed ones)
    doubles, targets = [], []
    try:
        for i, verbs in enumerate(ROLES):
            double = ApiDouble(namespace, [only_pods(project, *verbs)], [manifest(project, "rolebinding")]).start()
            doubles.append(double)
            seed_pod(double, "orphan", namespace, {**project_label(project), "kubernetes_pod_operator": "True",
                                                   "dag_id": "remote_kpo", "task_id": "hello_remote", "run_id": run_id},
                     age=HOUR)
            ca = tmp_path / f"ca-{i}.crt"
            ca.write_bytes(base64.b64decode(double.ca_data))
            targets.append([double.url, str(ca), bound_token(project, double), namespace])
        done = subprocess.run([sys.executable, "-c", SWEEP, json.dumps(targets),
                               json.dumps({run_id: {"hello_remote": "failed"}})], capture_output=True, text=True,
                              env=airflow_env(project.path, tmp_path / "home"), cwd=project.path, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results = [json.loads(line) for line in done.stdout.strip().splitlines()[-len(ROLES):]]
        for (verbs, outcome), result, double in zip(ROLES.items(), results, doubles, strict=True):
            if outcome == "deleted":
                assert result == {"deleted": ["orphan"], "kept": {}} and double.live_pods() == [], (verbs, result)
            else:
                assert result["status"] == 403 and outcome in result["message"], (verbs, result)
                assert len(double.live_pods()) == 1, verbs
    finally:
        for double in doubles:
            double.stop()


# -- end to end in real Airflow -------------------------------------------------------------------
def fail_task_instance(cluster: Cluster, dag_id: str, task_id: str, run_id: str) -> str:
    """What the scheduler does to a running task instance whose worker stopped heartbeating and
    that has no retry left: state failed, with an end date. Done here in the test's Airflow
    database (sqlite) directly; returns the state it had."""
    with sqlite3.connect(cluster.airflow_home / "airflow.db") as db:
        key = (dag_id, task_id, run_id)
        (before,) = db.execute("SELECT state FROM task_instance WHERE dag_id=? AND task_id=? AND run_id=?", key).fetchone()
        db.execute("UPDATE task_instance SET state='failed', end_date=? WHERE dag_id=? AND task_id=? AND run_id=?",
                   (dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), *key))
    return before


def janitor_requests(cluster: Cluster, since: int) -> list[dict]:
    return [r for r in cluster.double.requests[since:] if r.get("resource")]


def test_janitor_removes_a_killed_workers_orphan_and_nothing_else(render, airflow_home, tmp_path):
    """remote_kpo in sync mode without retries: under dag.test() a deferrable task's trigger runs
    inside the killed process, so only sync mode leaves the task instance "running" as a
    deployment would show it while the pod runs on."""
    project = render(GENERIC)
    rc_namespace = project.answers["namespace"]
    kpo = variant(project.path, tmp_path, deferrable=False, retries=0)
    with Cluster(kpo, airflow_home, tmp_path, double_options={"extra_run_seconds": 120}) as cluster:
        double = cluster.double
        ours = {**project_label(project), "kubernetes_pod_operator": "True", "dag_id": "remote_kpo",
                "task_id": "hello_remote"}
        # Old pods the janitor must never touch: another namespace, no project label, another project,
        # another Airflow.
        strangers = {"other-namespace": ("other-team", ours), "no-project-label": (rc_namespace, {
            k: v for k, v in ours.items() if k != "app.kubernetes.io/part-of"}), "other-project": (rc_namespace, {
                **ours, "app.kubernetes.io/part-of": "someone-else"}),
            # The deployment's pod of the same run (scheduled run ids are the same everywhere).
            "other-airflow": (rc_namespace, {**ours, "airflow_instance": "clx0prod0deployment"})}

        # A worker killed while its pod runs; no retry will come back for the pod.
        process = cluster.start("remote_kpo", LOGICAL_DATE)
        deadline = time.time() + 120
        while not any(p["status"]["phase"] == "Running" for p in double.live_pods()):
            assert time.time() < deadline and process.poll() is None, "the pod never ran"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        (orphan,) = double.live_pods()
        name, labels = orphan["metadata"]["name"], orphan["metadata"]["labels"]
        assert labels["run_id"] != RUN_ID, "the operator wrote a hashed run_id label: matching must go through it"
        for stranger, (namespace, stranger_labels) in strangers.items():
            seed_pod(double, stranger, namespace, {**stranger_labels, "run_id": labels["run_id"]}, age=2 * HOUR)

        # 1. An old pod whose task instance is still running is kept.
        set_age(double, name, 2 * HOUR)
        first = cluster.run("remote_pod_janitor")
        assert first.succeeded, first.log[-4000:]
        assert f"Kept pod {name} " in first.log and "its task is running" in first.log
        assert name in {p["metadata"]["name"] for p in double.live_pods()}

        # 2. The scheduler fails the task instance of the dead worker (retries=0: no retry). Simulated.
        assert fail_task_instance(cluster, "remote_kpo", "hello_remote", RUN_ID) == "running"
        set_age(double, name, 10 * 60)  # younger than the grace period: kept
        second = cluster.run("remote_pod_janitor")
        assert second.succeeded, second.log[-4000:]
        assert f"Kept pod {name} " in second.log and "younger than the grace period (10 min < 30 min)" in second.log

        # 3. Past the grace period the orphan is deleted and logged; nothing else is touched.
        set_age(double, name, 31 * 60)
        since = len(double.requests)
        third = cluster.run("remote_pod_janitor")
        assert third.succeeded, third.log[-4000:]
        assert f"Deleted orphan pod {name} in {rc_namespace} (dag_id=remote_kpo task_id=hello_remote " \
               f"run_id={labels['run_id']} try_number=1, age 31 min, task state failed)" in third.log, third.log[-4000:]
        assert "1 pods of" in third.log and "1 deleted, 0 already gone, 0 kept" in third.log
        assert {p["metadata"]["name"] for p in double.live_pods()} == set(strangers)

        calls = janitor_requests(cluster, since)
        assert {(r["method"], r["verb"], r["resource"], r["status"]) for r in calls} == {
            ("GET", "list", "pods", 200), ("DELETE", "delete", "pods", 200)}
        assert all(r["path"].startswith(f"/api/v1/namespaces/{rc_namespace}/") for r in calls)
        assert [r["name"] for r in calls if r["method"] == "DELETE"] == [name]
