"""Which of this project's pods on the remote cluster are orphans, and deleting them.

An orphan is a pod whose task has finished while the pod is still there: the worker died
(out of memory, node replaced, deployment restarted) before it could delete the pod, and no
retry came back for it. dags/remote_pod_janitor.py runs ``run`` every hour: while the
connection is still the example written at render time it logs one line and calls nothing
(preflight.not_set_up), else it ``sweep``s.

A pod is deleted only when all of this holds:

- it is in REMOTE_NAMESPACE and carries this project's POD_LABELS (the project, and this
  Airflow as AIRFLOW_INSTANCE: another deployment's or a local Airflow's pods of the same
  run ids are never judged) and the pod operator's dag_id, task_id and run_id labels (the list
  asks the API server for exactly those);
- it is older than GRACE_PERIOD;
- Airflow reports its task instance, and that task instance is finished (FINISHED_STATES).
  A task that is queued, scheduled, running, deferred, up for retry, restarting or cleared
  keeps its pod: its next try reattaches to it. A pod whose task instance Airflow does not
  know is kept and logged (a deleted DAG run, or a dag_id or task_id too long for a label).

The operator writes shortened, hashed label values for ids that are not valid labels (every
manual run_id has a ``:``), so run ids are matched by passing Airflow's real ones through
the provider's own ``make_safe_label_value``, never by decoding a label. Plain functions
over the kubernetes client's objects; the only Airflow call comes in as ``get_task_states``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value
from kubernetes.client import CoreV1Api, V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from . import preflight
from .remote_cluster import AIRFLOW_INSTANCE, INSTANCE_LABEL, POD_LABELS, PROJECT_LABEL

log = logging.getLogger(__name__)

# A pod exists a few seconds before its task instance's state says so, and a worker that is
# restarted reattaches within minutes: pods younger than this are never deleted.
GRACE_PERIOD = timedelta(minutes=30)
PROJECT = POD_LABELS[PROJECT_LABEL]
# Task instance states after which nothing reattaches to the pod. Any other state, including
# None (cleared) and states a later Airflow may add, keeps the pod.
FINISHED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
# The labels KubernetesPodOperator (and its EKS/GKE subclasses) gives every pod.
TASK_LABELS = ("dag_id", "task_id", "run_id")
# This project's pods started by this Airflow (POD_LABELS: project and AIRFLOW_INSTANCE).
LABEL_SELECTOR = ",".join([*(f"{key}={value}" for key, value in POD_LABELS.items()), "kubernetes_pod_operator=True",
                           *TASK_LABELS])

# get_task_states(dag_id=..., task_ids=[...]) -> {run_id: {task_id or "<task_id>_<map_index>": state}}
TaskStates = Callable[..., dict[str, dict[str, Any]]]


@dataclass
class Pod:
    """What the janitor needs to know of one pod."""

    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    created: datetime
    terminating: bool = False

    @classmethod
    def of(cls, pod) -> Pod:
        """From a kubernetes.client V1Pod."""
        meta = pod.metadata
        return cls(name=meta.name, namespace=meta.namespace, uid=meta.uid, labels=dict(meta.labels or {}),
                   created=meta.creation_timestamp, terminating=meta.deletion_timestamp is not None)

    def describe(self) -> str:
        task = " ".join(f"{key}={self.labels.get(key)}" for key in (*TASK_LABELS, "try_number"))
        index = self.labels.get("map_index")
        return f"{task}{f' map_index={index}' if index else ''}"


@dataclass
class Verdict:
    pod: Pod
    delete: bool
    reason: str
    age: timedelta
    state: str | None = None


@dataclass
class Summary:
    namespace: str
    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # pod name -> why

    def counts(self) -> dict[str, int]:
        return {"deleted": len(self.deleted), "already_gone": len(self.already_gone), "kept": len(self.kept)}


def minutes(age: timedelta) -> str:
    return f"{int(age.total_seconds() // 60)} min"


def task_key(task_id: str, map_index: str | None) -> str:
    """The key get_task_states gives a task instance: the task_id, or task_id_<n> when mapped."""
    return f"{task_id}_{map_index}" if map_index not in (None, "", "-1") else task_id


def task_states_of(pod: Pod, runs: dict[str, dict[str, Any]]) -> list[str | None]:
    """The states of the task instances that may have started this pod: those of every real
    run_id whose label form equals the pod's run_id label (normally exactly one)."""
    key = task_key(pod.labels["task_id"], pod.labels.get("map_index"))
    found = []
    for run_id, states in runs.items():
        if make_safe_label_value(run_id) == pod.labels["run_id"] and key in states:
            state = states[key]
            found.append(None if state is None else str(getattr(state, "value", state)))
    return found


def judge(pod: Pod, namespace: str, runs_of: Callable[[str, str], dict], now: datetime,
          grace: timedelta = GRACE_PERIOD) -> Verdict:
    """Delete or keep one pod. ``runs_of(dag_id, task_id)`` is asked only for pods old enough."""
    age = now - pod.created
    if pod.namespace != namespace:
        return Verdict(pod, False, f"in namespace {pod.namespace}, not {namespace}", age)
    if pod.labels.get(PROJECT_LABEL) != PROJECT:
        return Verdict(pod, False, f"not labelled {PROJECT_LABEL}={PROJECT}", age)
    if pod.labels.get(INSTANCE_LABEL) != AIRFLOW_INSTANCE:
        return Verdict(pod, False, f"started by another Airflow ({INSTANCE_LABEL}={pod.labels.get(INSTANCE_LABEL)}, "
                                   f"not {AIRFLOW_INSTANCE})", age)
    if not all(pod.labels.get(key) for key in TASK_LABELS):
        return Verdict(pod, False, "no dag_id/task_id/run_id labels of the pod operator", age)
    if pod.terminating:
        return Verdict(pod, False, "already being deleted", age)
    if age < grace:
        return Verdict(pod, False, f"younger than the grace period ({minutes(age)} < {minutes(grace)})", age)
    states = task_states_of(pod, runs_of(pod.labels["dag_id"], pod.labels["task_id"]))
    if not states:
        return Verdict(pod, False, "no task instance in Airflow matches its labels", age)
    unfinished = sorted({s or "cleared (no state)" for s in states if s not in FINISHED_STATES})
    if unfinished:
        return Verdict(pod, False, f"its task is {'/'.join(unfinished)}", age, state=unfinished[0])
    return Verdict(pod, True, "its task is finished", age, state="/".join(sorted(set(states))))


def sweep(core_v1, namespace: str, get_task_states: TaskStates, *, now: datetime | None = None,
          grace: timedelta = GRACE_PERIOD) -> Summary:
    """List this project's pods in ``namespace``, delete the orphans, log each one and a summary.

    ``core_v1`` is a kubernetes.client CoreV1Api; only pods list and delete are called."""
    now = now or datetime.now(UTC)
    listed = core_v1.list_namespaced_pod(namespace, label_selector=LABEL_SELECTOR,
                                         _request_timeout=preflight.API_TIMEOUT).items
    cache: dict[tuple[str, str], dict] = {}

    def runs_of(dag_id: str, task_id: str) -> dict:
        if (dag_id, task_id) not in cache:
            cache[dag_id, task_id] = get_task_states(dag_id=dag_id, task_ids=[task_id]) or {}
        return cache[dag_id, task_id]

    summary = Summary(namespace)
    for verdict in (judge(Pod.of(p), namespace, runs_of, now, grace) for p in listed):
        pod = verdict.pod
        if not verdict.delete:
            summary.kept[pod.name] = verdict.reason
            log.info("Kept pod %s (%s, age %s): %s", pod.name, pod.describe(), minutes(verdict.age), verdict.reason)
            continue
        try:
            # The uid precondition: delete this very pod, never a newer one that took its name.
            core_v1.delete_namespaced_pod(pod.name, namespace,
                                          body=V1DeleteOptions(preconditions=V1Preconditions(uid=pod.uid)),
                                          _request_timeout=preflight.API_TIMEOUT)
        except ApiException as err:
            if err.status == 404:
                summary.already_gone.append(pod.name)
                log.info("Pod %s was already gone", pod.name)
                continue
            if err.status == 409:
                summary.kept[pod.name] = "its name now belongs to another pod"
                log.info("Kept pod %s: its name now belongs to another pod", pod.name)
                continue
            raise
        summary.deleted.append(pod.name)
        log.info("Deleted orphan pod %s in %s (%s, age %s, task state %s)", pod.name, namespace, pod.describe(),
                    minutes(verdict.age), verdict.state)
    log.info("Orphan sweep of namespace %s: %d pods of %s listed; %d deleted, %d already gone, %d kept",
             namespace, len(listed), PROJECT, len(summary.deleted), len(summary.already_gone), len(summary.kept))
    return summary


def run(extra: dict, api_client: Callable[[], AbstractContextManager], namespace: str,
        get_task_states: TaskStates) -> dict[str, int]:
    """The janitor task of one cluster. ``extra``: its connection's extra; ``api_client()``: a
    context manager yielding its kubernetes ApiClient (include/kube_client.py). Before setup
    (the connection still the rendered example) it logs one line and succeeds without making
    the client: an hourly failure on the example endpoint would only be noise."""
    if notice := preflight.not_set_up(extra):
        log.info("Not sweeping: %s", notice)
        return Summary(namespace).counts()
    with api_client() as client:
        return sweep(CoreV1Api(client), namespace, get_task_states).counts()
