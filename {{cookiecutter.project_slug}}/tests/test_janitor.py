"""Which pods the janitor (include/janitor.py) deletes. The pods and the task states are
stand-ins here; the verdicts, the label matching and the deletion calls are the project's code."""

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value
from airflow.utils.state import State, TaskInstanceState
from kubernetes.client import V1ObjectMeta, V1Pod
from kubernetes.client.exceptions import ApiException

from include import janitor, preflight
from include import remote_cluster as rc

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OLD = NOW - janitor.GRACE_PERIOD - timedelta(minutes=1)
# A manual run's id is not a valid label value: the operator writes a shortened, hashed form.
RUN_ID = "manual__2026-03-01T10:00:00+00:00"


def pod(name="hello-remote-abc", *, created=OLD, namespace=rc.REMOTE_NAMESPACE, run_id=RUN_ID, deleting=False,
        **labels) -> V1Pod:
    base = {**rc.POD_LABELS, "dag_id": "remote_kpo", "task_id": "hello_remote", "run_id": make_safe_label_value(run_id),
            "try_number": "1", "kubernetes_pod_operator": "True"}
    merged = {k: v for k, v in {**base, **labels}.items() if v is not None}
    return V1Pod(metadata=V1ObjectMeta(name=name, namespace=namespace, uid=f"uid-{name}", labels=merged,
                                       creation_timestamp=created, deletion_timestamp=NOW if deleting else None))


def runs(state, run_id=RUN_ID, key="hello_remote") -> dict:
    """What get_task_states answers: {run_id: {task key: state}}."""
    return {"remote_kpo": {run_id: {key: state}}}


def verdict(p: V1Pod, states: dict, *, now=NOW) -> janitor.Verdict:
    return janitor.judge(janitor.Pod.of(p), rc.REMOTE_NAMESPACE, lambda dag_id, task_id: states.get(dag_id, {}), now)


def test_run_id_label_is_really_sanitized_here():
    assert make_safe_label_value(RUN_ID) != RUN_ID, "the test would not show the matching"


@pytest.mark.parametrize("state", sorted(State.finished))
def test_a_finished_tasks_old_pod_is_deleted(state):
    found = verdict(pod(), runs(state))
    assert found.delete and found.state == state


@pytest.mark.parametrize("state", [None, *sorted(set(TaskInstanceState) - set(State.finished))])
def test_a_pod_whose_task_may_still_use_it_is_kept(state):
    """Queued, running, deferred, up for retry, cleared...: the next try reattaches to the pod."""
    found = verdict(pod(), runs(state))
    assert not found.delete and "its task is" in found.reason


def test_finished_states_are_airflows():
    assert janitor.FINISHED_STATES == {str(s.value) for s in State.finished}


def test_a_young_pod_of_a_finished_task_is_kept_until_the_grace_period_passes():
    young = pod(created=NOW - janitor.GRACE_PERIOD + timedelta(minutes=1))
    assert not verdict(young, runs("failed")).delete
    assert "younger than the grace period" in verdict(young, runs("failed")).reason
    assert verdict(young, runs("failed"), now=NOW + timedelta(minutes=2)).delete


def test_run_id_is_matched_through_the_label_form_only():
    assert not verdict(pod(), runs("failed", run_id=RUN_ID.replace("10:00", "11:00"))).delete  # another run
    assert "no task instance" in verdict(pod(), {}).reason


def test_mapped_task_instances_are_told_apart():
    mapped = pod(map_index="2")
    assert verdict(mapped, runs("failed", key="hello_remote_2")).delete
    states = {"remote_kpo": {RUN_ID: {"hello_remote_2": "running", "hello_remote_3": "failed"}}}
    assert not verdict(mapped, states).delete


@pytest.mark.parametrize("p, why", [
    (pod(namespace="default"), "in namespace default"),
    (pod(**{rc.PROJECT_LABEL: "another-project"}), "not labelled"),
    (pod(**{rc.PROJECT_LABEL: None}), "not labelled"),
    (pod(run_id=RUN_ID, dag_id=None), "no dag_id/task_id/run_id"),
    (pod(deleting=True), "already being deleted"),
    (pod(**{rc.INSTANCE_LABEL: "another-deployment"}), "started by another Airflow"),
    (pod(**{rc.INSTANCE_LABEL: None}), "started by another Airflow"),
], ids=["other-namespace", "other-project", "no-project-label", "no-operator-labels", "terminating", "other-airflow",
        "no-airflow-label"])
def test_pods_that_are_not_ours_to_judge_are_kept(p, why):
    found = verdict(p, runs("failed"))
    assert not found.delete and why in found.reason


def test_the_list_asks_only_for_this_projects_operator_pods():
    selector = dict(part.partition("=")[::2] for part in janitor.LABEL_SELECTOR.split(","))
    assert selector == {**rc.POD_LABELS, "kubernetes_pod_operator": "True", "dag_id": "", "task_id": "", "run_id": ""}
    assert rc.POD_LABELS[rc.INSTANCE_LABEL] == rc.AIRFLOW_INSTANCE, "only this Airflow's pods"


@pytest.mark.parametrize("env, expected", [
    ({}, "local"),
    ({"ASTRO_DEPLOYMENT_ID": "clx9abc123"}, "clx9abc123"),
    ({"ASTRO_DEPLOYMENT_ID": "clx9abc123", "KPO_AIRFLOW_INSTANCE": "jane@laptop"}, "jane-laptop"),
    ({"KPO_AIRFLOW_INSTANCE": "x" * 80}, "x" * 63),
    ({"KPO_AIRFLOW_INSTANCE": "@@"}, "local"),
])
def test_the_airflow_instance_is_a_valid_label_value(env, expected):
    assert rc.airflow_instance(env) == expected


def test_the_role_grants_what_the_janitor_calls():
    assert {("list", "pods", ""), ("delete", "pods", "")} <= set(rc.REQUIRED_PERMISSIONS)


class FakeCoreV1:
    """list_namespaced_pod and delete_namespaced_pod, the only calls the janitor makes."""

    def __init__(self, pods, fail: dict[str, int] | None = None):
        self.pods, self.fail, self.deleted, self.listed = pods, fail or {}, [], []

    def list_namespaced_pod(self, namespace, label_selector, _request_timeout):
        assert _request_timeout == preflight.API_TIMEOUT
        self.listed.append((namespace, label_selector))
        return SimpleNamespace(items=self.pods)

    def delete_namespaced_pod(self, name, namespace, body, _request_timeout):
        assert _request_timeout == preflight.API_TIMEOUT
        if name in self.fail:
            raise ApiException(status=self.fail[name])
        self.deleted.append((name, namespace, body.preconditions.uid))


def test_sweep_deletes_orphans_only_asks_airflow_once_per_task_and_logs_each(caplog):
    pods = [pod("orphan"), pod("orphan-2"), pod("young", created=NOW), pod("running", run_id="scheduled__x")]
    api, asked = FakeCoreV1(pods), []
    states = {RUN_ID: {"hello_remote": "failed"}, "scheduled__x": {"hello_remote": "running"}}

    def get_task_states(**query):
        asked.append(query)
        return states

    with caplog.at_level("INFO", logger="include.janitor"):
        summary = janitor.sweep(api, rc.REMOTE_NAMESPACE, get_task_states, now=NOW)
    assert api.listed == [(rc.REMOTE_NAMESPACE, janitor.LABEL_SELECTOR)]
    assert api.deleted == [("orphan", rc.REMOTE_NAMESPACE, "uid-orphan"), ("orphan-2", rc.REMOTE_NAMESPACE, "uid-orphan-2")]
    assert asked == [{"dag_id": "remote_kpo", "task_ids": ["hello_remote"]}]
    assert set(summary.kept) == {"young", "running"}
    assert "Deleted orphan pod orphan " in caplog.text and "task state failed" in caplog.text
    assert f"run_id={make_safe_label_value(RUN_ID)}" in caplog.text and "age 31 min" in caplog.text
    assert "2 deleted, 0 already gone, 2 kept" in caplog.text


def test_sweep_tolerates_a_pod_already_gone_and_a_reused_name_but_not_a_refusal():
    api = FakeCoreV1([pod("gone"), pod("renamed"), pod("orphan")], fail={"gone": 404, "renamed": 409})
    summary = janitor.sweep(api, rc.REMOTE_NAMESPACE, lambda **_: runs("failed")["remote_kpo"], now=NOW)
    assert summary.already_gone == ["gone"] and "renamed" in summary.kept and summary.deleted == ["orphan"]
    with pytest.raises(ApiException):
        janitor.sweep(FakeCoreV1([pod()], fail={"hello-remote-abc": 403}), rc.REMOTE_NAMESPACE,
                      lambda **_: runs("failed")["remote_kpo"], now=NOW)


@pytest.mark.skipif(rc.POD_OPERATOR == "native", reason="the native operator's connection is the cloud's own: no example")
def test_before_setup_it_logs_one_line_and_makes_no_client(caplog):
    """The connection as rendered (scripts/write_connection.py --placeholder): nothing is called."""
    def no_client():
        raise AssertionError("made a Kubernetes client before setup")

    with caplog.at_level("INFO"):
        counts = janitor.run(rc.connection_extra(), no_client, rc.REMOTE_NAMESPACE, lambda **_: {})
    assert counts == {"deleted": 0, "already_gone": 0, "kept": 0}
    (line,) = [record.getMessage() for record in caplog.records]
    assert f"connection {rc.CONNECTION_ID} is still the example ({rc.PLACEHOLDER_SERVER})" in line
    assert "scripts/setup_remote.sh" in line


def test_once_set_up_it_sweeps(monkeypatch):
    api, made = FakeCoreV1([pod()]), []

    @contextmanager
    def client():
        made.append("client")
        yield "api client"

    monkeypatch.setattr(janitor, "CoreV1Api", lambda api_client: api if api_client == "api client" else None)
    extra = rc.connection_extra(server="https://203.0.113.10", ca_data="Q0E=")
    counts = janitor.run(extra, client, rc.REMOTE_NAMESPACE, lambda **_: runs("failed")["remote_kpo"])
    assert made == ["client"] and counts["deleted"] == 1 and api.deleted
