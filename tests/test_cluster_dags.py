"""The multi-cluster DAGs and the cluster registry (cluster/files/) in projects with clusters added
by the real add command (`cookiecutter <template> --directory cluster`).

Each project: one primary variant plus two added ones, so that every variant (aws and gcp with
either operator, azure, generic) is a primary once and an added cluster twice. Each project's DAGs
load in the real Airflow in a subprocess that sees only the image's packages (requirements.txt
with the added clusters' providers, merged by the add command), and the DAG objects are
inspected there: task ids, pools, operator classes, connections per cluster; the registry's names and refusal; and the preflight
report task run with fake step results, once with every cluster ready and once per cluster
with that one failing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG, ROOT, airflow_env, check_keys
from cookiecutter.main import cookiecutter

STEPS = ["connection", "credentials", "api_server", "permissions", "quota"]
NATIVE_CLASS = {"aws": "EksPodOperator", "gcp": "GKEStartPodOperator"}
VARIANTS = {
    "aws": {"cloud": "aws", "xcom": True},
    "aws-native": {"cloud": "aws", "xcom": False, "pod_operator": "native"},
    "gcp": {"cloud": "gcp", "xcom": False},
    "gcp-native": {"cloud": "gcp", "xcom": True, "pod_operator": "native"},
    "azure": {"cloud": "azure", "xcom": True},
    "generic": {"cloud": "generic", "xcom": False},
}
ORDER = list(VARIANTS)
# primary -> the variants added to it: each variant is added twice, never to itself.
PROJECTS = {p: [ORDER[(i + 1) % 6], ORDER[(i + 3) % 6]] for i, p in enumerate(ORDER)}


def added_answers(variant: str, cluster_id: str) -> dict:
    pkg = cluster_id.replace("-", "_")
    return {"cluster_id": cluster_id, **VARIANTS[variant], "cluster_name": cluster_id, "namespace": f"jobs-{cluster_id}",
            "kubernetes_conn_id": f"conn_{pkg}"}


def add_cluster(project: Path, answers: dict) -> None:
    """The add command, as a user runs it in the project folder."""
    words = [f"{k}={('yes' if v else 'no') if isinstance(v, bool) else v}" for k, v in answers.items()]
    done = subprocess.run([Path(sys.executable).parent / "cookiecutter", "--no-input", ROOT, "--directory", "cluster",
                           *words], cwd=project, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


INSPECT = r"""
import contextlib, io, json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowFailException
import clusters

bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": bag.import_errors, "dags": sorted(bag.dag_ids), "names": clusters.names(), "tasks": {}}
for dag_id in ("remote_kpo_clusters", "check_remote_clusters", "remote_pod_janitor_clusters"):
    dag = bag.dags.get(dag_id)
    if dag is None:  # an import error: the tests show it
        print(json.dumps(out))
        sys.exit(0)
    out["tasks"][dag_id] = tasks = {}
    for t in dag.tasks:
        info = {"upstream": sorted(t.upstream_task_ids), "pool": t.pool,
                "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule)}
        if isinstance(t, KubernetesPodOperator):
            info |= {"class": [c.__name__ for c in type(t).__mro__], "name": t.name,
                     "conn": getattr(t, "aws_conn_id", None) or getattr(t, "gcp_conn_id", None) or t.kubernetes_conn_id,
                     "namespace": t.namespace, "in_cluster": t.in_cluster, "deferrable": t.deferrable,
                     "xcom": t.do_xcom_push, "requests": t.container_resources.requests,
                     "on_finish": t.on_finish_action.value, "startup": t.startup_timeout_seconds}
        tasks[t.task_id] = info
    out[dag_id] = {"schedule": str(dag.schedule), "retries": dag.default_args.get("retries"),
                   "tags": sorted(dag.tags)}
try:
    clusters.cluster("nope")
except ValueError as err:
    out["unknown"] = str(err)

# The preflight report with fake step results: all ready, then each cluster failing once.
report = bag.dags["check_remote_clusters"].get_task("report")
keys = {name: clusters.cluster(name).key for name in clusters.names()}

# Step results as XComs: every step passes (credentials with a warning) except, on the failing
# cluster, permissions (with its message, or none: a killed task) and so quota (not run).
class FakeTI:
    def __init__(self, failing, message):
        self.failing, self.message = failing, message
    def xcom_pull(self, task_ids, key="return_value", **kwargs):
        group, step = task_ids.split(".")
        name = next(n for n, k in keys.items() if k == group)
        if name != self.failing or step in ("connection", "credentials", "api_server"):
            finding = ("WARNING: " if step == "credentials" else "") + f"{step} fine on {name}"
            return finding if key == "return_value" else None
        if step == "permissions" and key == "failure" and self.message:
            return f"missing in namespace of {name}: create pods"
        return None

def run_report(failing, message=True):
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            report.python_callable(ti=FakeTI(failing, message))
    except AirflowFailException as err:
        return {"error": str(err), "printed": printed.getvalue().splitlines()}
    return {"error": None, "printed": printed.getvalue().splitlines()}

out["report"] = {str(name): run_report(name) for name in [None, *clusters.names()]}
out["report_silent"] = run_report(clusters.names()[-1], message=False)
print(json.dumps(out))
"""


@pytest.fixture(scope="session", params=list(PROJECTS), ids=lambda p: f"primary-{p}")
def inspected(request, tmp_path_factory) -> dict:
    primary = request.param
    work = tmp_path_factory.mktemp(f"clusters-{primary}")
    project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(work),
                                extra_context=check_keys({**VARIANTS[primary], "project_slug": "multi"})))
    added = [added_answers(variant, f"{variant}-x") for variant in PROJECTS[primary]]
    for answers in added:
        add_cluster(project, answers)
    done = subprocess.run([sys.executable, "-c", INSPECT, str(project / "dags")], capture_output=True, text=True,
                          env=airflow_env(project, work / "home"), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}, found["errors"]  # every test below needs the DAGs loaded
    return {"primary": primary, "added": added, **found}


def expected_clusters(found: dict) -> list[dict]:
    """name, key, pool, conn, namespace, xcom and operator class of each cluster, from the answers."""
    primary = {**{k: v for k, v in CONFIG.items() if not k.startswith("_")}, **VARIANTS[found["primary"]]}
    rows = [{"name": primary["cluster_name"], "key": primary["cluster_name"].replace("-", "_"), "pool": "remote_kpo",
             "answers": primary}]
    for answers in sorted(found["added"], key=lambda a: a["cluster_id"]):
        pkg = answers["cluster_id"].replace("-", "_")
        rows.append({"name": answers["cluster_id"], "key": pkg, "pool": f"remote_kpo_{pkg}", "answers": answers})
    return rows


def test_dags_load_in_the_image_with_every_cluster(inspected):
    assert inspected["errors"] == {}
    assert {"remote_kpo_clusters", "check_remote_clusters", "remote_pod_janitor_clusters", "remote_kpo",
            "check_remote_cluster", "remote_pod_janitor"} <= set(inspected["dags"])
    assert inspected["names"] == [row["name"] for row in expected_clusters(inspected)]
    for dag_id in ("remote_kpo_clusters", "check_remote_clusters", "remote_pod_janitor_clusters"):
        assert inspected[dag_id]["retries"] >= 2 and "remote-kpo" in inspected[dag_id]["tags"]


def test_one_pod_per_cluster_with_its_operator_pool_and_connection(inspected):
    tasks = inspected["tasks"]["remote_kpo_clusters"]
    rows = expected_clusters(inspected)
    with_xcom = [f"hello_{row['key']}" for row in rows if row["answers"]["xcom"]]
    assert set(tasks) == {f"hello_{row['key']}" for row in rows} | ({"use_results"} if with_xcom else set())
    for row in rows:
        answers, pod = row["answers"], tasks[f"hello_{row['key']}"]
        native = answers.get("pod_operator") == "native"
        expected_class = NATIVE_CLASS[answers["cloud"]] if native else "KubernetesPodOperator"
        assert expected_class in pod["class"] and "RemotePodOperator" in pod["class"], (row["name"], pod["class"])
        assert pod["upstream"] == []  # all at once
        assert {k: pod[k] for k in ("pool", "conn", "namespace", "xcom", "name")} == {
            "pool": row["pool"], "conn": answers["kubernetes_conn_id"], "namespace": answers["namespace"],
            "xcom": answers["xcom"], "name": "hello-remote"}, row["name"]
        assert pod["in_cluster"] is False and pod["deferrable"] is True and pod["on_finish"] == "delete_pod"
        assert pod["startup"] == 900 and pod["requests"] == {"cpu": "100m", "memory": "128Mi"}
    if with_xcom:
        assert tasks["use_results"]["upstream"] == sorted(with_xcom)


def test_preflight_groups_per_cluster_and_a_report_after_all(inspected):
    tasks = inspected["tasks"]["check_remote_clusters"]
    keys = [row["key"] for row in expected_clusters(inspected)]
    assert set(tasks) == {f"{key}.{step}" for key in keys for step in STEPS} | {"report"}
    for key in keys:
        for before, after in zip(STEPS, STEPS[1:], strict=False):
            assert tasks[f"{key}.{after}"]["upstream"] == [f"{key}.{before}"]
    assert tasks["report"]["trigger_rule"] == "all_done"
    assert tasks["report"]["upstream"] == sorted(f"{key}.quota" for key in keys)


def test_janitor_sweeps_each_added_cluster_hourly(inspected):
    tasks = inspected["tasks"]["remote_pod_janitor_clusters"]
    assert set(tasks) == {f"delete_orphan_pods_{a['cluster_id'].replace('-', '_')}" for a in inspected["added"]}
    assert all(task["upstream"] == [] for task in tasks.values())
    assert inspected["remote_pod_janitor_clusters"]["schedule"] == "@hourly"


def test_registry_refuses_an_unknown_cluster_naming_the_known_ones(inspected):
    assert inspected["unknown"] == f"unknown cluster 'nope'; this project has: {', '.join(inspected['names'])}"


def test_report_fails_naming_exactly_the_failing_cluster(inspected):
    report = dict(inspected["report"])
    names = inspected["names"]
    ready = report.pop("None")
    assert ready["error"] is None  # all ready (one warning each): the report passes
    assert [line for line in ready["printed"] if line.startswith("Remote cluster")] == [
        f"Remote cluster {name}: ready (see the warning)" for name in names]
    assert [line for line in ready["printed"] if line.startswith("  [warn]")] == [
        f"  [warn]   credentials  credentials fine on {name}" for name in names]
    assert set(report) == set(names)
    for failing, result in report.items():
        why = f"missing in namespace of {failing}: create pods"
        assert result["error"] == f"not ready: {failing} (permissions: {why})"
        assert f"  [FAILED] permissions  {why}" in result["printed"]
        assert "  [-]      quota        not run: an earlier step failed" in result["printed"]
        assert sum(line.startswith("  [") for line in result["printed"]) == len(STEPS) * len(names)
    silent = inspected["report_silent"]
    assert silent["error"] == f"not ready: {names[-1]} (permissions: failed without a message: see the task's log)"

