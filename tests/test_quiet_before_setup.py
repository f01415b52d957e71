"""Quiet before setup, and no Kubernetes call without a timeout.

Until scripts/setup_remote.sh has written the real connection, the connection is the example that
scripts/write_connection.py --placeholder wrote at render time (server PLACEHOLDER_SERVER). Every
scheduled DAG (the janitors: dags/remote_pod_janitor.py, and for added clusters
dags/remote_pod_janitor_clusters.py) then logs one line naming the connection and
scripts/setup_remote.sh and succeeds without touching the network; the manually triggered
preflight still fails, naming the example. Shown end to end in real Airflow (``dag.test()``, only
the image's packages) with the connections exactly as airflow_settings.yaml holds them after
rendering (and after adding a cluster), under a guard that records, and refuses, every name
lookup, every connection to a host other than this one and every subprocess (an exec plugin would
be one) of the DAG process: it records nothing. The guard itself is shown catching each of the three.

Every call through the kubernetes client in the project's own code passes ``_request_timeout``
(a static scan of every rendered variant, shown failing on a call without one), and that timeout
fires: against a server that accepts and never answers, the janitor's list and the preflight's
first call give up within seconds, while the same call without a timeout is still waiting.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import CASES, ROOT, airflow_env
from e2e_harness import RUN_DAG, add_cluster, dag_env, finish, migrate

GENERIC = {"cloud": "generic", "xcom": False}
EXAMPLE = "is still the example (https://cluster-endpoint.example.invalid)"
SCHEDULED_DAGS = {"remote_pod_janitor", "remote_pod_janitor_clusters"}

# Put in front of the DAG run (tests/dag_run.py): after the image gate, before Airflow.
GUARD = r"""
import os, runpy, socket, subprocess, sys

del sys.path[0]  # this file's folder
LOG = os.environ["KPO_TEST_NETWORK_LOG"]
# This machine's own names; `file` is platform.architecture() asking about the interpreter.
LOCAL = {None, "", "localhost", "127.0.0.1", "::1", socket.gethostname()}
HARMLESS = {"file"}


def note(what):
    with open(LOG, "a") as log:
        log.write(what + "\n")


def name(host):
    return host.decode() if isinstance(host, bytes) else host


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if name(host) not in LOCAL:
        note(f"resolve {name(host)}")
        raise socket.gaierror(socket.EAI_NONAME, f"name lookup refused by the test: {name(host)}")
    return _getaddrinfo(host, *args, **kwargs)


def guarded(method):
    def connect(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and name(address[0]) not in LOCAL:
            note(f"connect {address!r}")
            raise OSError(f"connection refused by the test: {address!r}")
        return method(self, address, *args)
    return connect


_popen_init = subprocess.Popen.__init__


def popen_init(self, args, *rest, **kwargs):
    if isinstance(args, (list, tuple)) and args and os.path.basename(str(args[0])) in HARMLESS:
        return _popen_init(self, args, *rest, **kwargs)
    note(f"exec {args!r}")
    raise OSError(f"subprocess refused by the test: {args!r}")


socket.getaddrinfo = getaddrinfo
socket.socket.connect = guarded(socket.socket.connect)
socket.socket.connect_ex = guarded(socket.socket.connect_ex)
subprocess.Popen.__init__ = popen_init
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def guarded_run(project: Path, env: dict, dag_id: str, work: Path) -> tuple:
    """Run one DAG under the guard; (RunResult, what the guard recorded)."""
    work.mkdir(parents=True, exist_ok=True)
    guard, log = work / "guard.py", work / "network.log"
    guard.write_text(GUARD)
    log.write_text("")
    run_dag = RUN_DAG
    if not isinstance(run_dag, Path):  # the harness's runner as source text
        run_dag = work / "dag_run.py"
        run_dag.write_text(RUN_DAG)
    process = subprocess.Popen([sys.executable, str(guard), str(run_dag), str(project / "dags"), dag_id],
                               env=env | {"KPO_TEST_NETWORK_LOG": str(log)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    result = finish(process, timeout=240)
    return result, log.read_text().splitlines()


def example_connections(project: Path) -> dict[str, str]:
    """AIRFLOW_CONN_<ID> of every connection in airflow_settings.yaml, as `astro dev start` makes them."""
    settings = yaml.safe_load((project / "airflow_settings.yaml").read_text())
    return {f"AIRFLOW_CONN_{c['conn_id'].upper()}": json.dumps({"conn_type": c["conn_type"], "extra": c["conn_extra"]})
            for c in settings["airflow"]["connections"]}


def example_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if EXAMPLE in line]


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home-quiet"))


def test_the_scheduled_dags_are_the_janitors():
    """The DAGs this file proves quiet: every DAG file of the template with a schedule other than None."""
    scheduled = set()
    for folder in (ROOT / "{{cookiecutter.project_slug}}" / "dags", ROOT / "cluster" / "files" / "dags"):
        for path in folder.glob("*.py"):
            text = path.read_text()
            assert "schedule=" in text, path
            if "schedule=None" not in text:
                scheduled.add(path.name.removesuffix(".py"))
    assert scheduled == SCHEDULED_DAGS


# -- the guard shows what it is there to see --------------------------------------------------------
@pytest.mark.parametrize("attempt, recorded", [
    ("socket.getaddrinfo('cluster-endpoint.example.invalid', 443)", "resolve cluster-endpoint.example.invalid"),
    ("socket.socket().connect(('192.0.2.1', 443))", "connect ('192.0.2.1', 443)"),
    ("subprocess.run(['true'])", "exec ['true']"),
], ids=["lookup", "connect", "exec"])
def test_the_guard_records_and_refuses(tmp_path, attempt, recorded):
    script = tmp_path / "attempt.py"
    script.write_text(f"import socket, subprocess\ntry:\n    {attempt}\nexcept OSError as err:\n    print('refused', err)\n")
    (tmp_path / "guard.py").write_text(GUARD)
    log = tmp_path / "network.log"
    done = subprocess.run([sys.executable, str(tmp_path / "guard.py"), str(script)], capture_output=True, text=True,
                          env=dict(os.environ, KPO_TEST_NETWORK_LOG=str(log)), timeout=60)
    assert done.returncode == 0 and "refused" in done.stdout, done.stderr
    assert log.read_text().splitlines() == [recorded]


# -- end to end: the rendered example connection ------------------------------------------------------
def test_janitor_before_setup_logs_one_line_and_touches_no_network(render, airflow_home, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(render(GENERIC).path, project)
    connections = example_connections(project)
    assert list(connections) == ["AIRFLOW_CONN_REMOTE_KUBERNETES"]
    env = dag_env(project, airflow_home, [], connections)

    janitor, attempts = guarded_run(project, env, "remote_pod_janitor", tmp_path / "janitor")
    assert janitor.succeeded, janitor.log[-4000:]
    assert attempts == [], attempts
    (line,) = example_lines(janitor.log)
    assert "connection remote_kubernetes is still the example" in line and "scripts/setup_remote.sh" in line, line
    assert "MaxRetryError" not in janitor.log and "Orphan sweep" not in janitor.log

    # The preflight, triggered by hand, still fails and says why (without touching the network either).
    preflight, attempts = guarded_run(project, env, "check_remote_cluster", tmp_path / "preflight")
    assert preflight.state == "failed" and preflight.tasks.get("connection") == "failed", preflight.log[-4000:]
    assert "connection remote_kubernetes still has the example endpoint" in preflight.log
    assert attempts == [], attempts


def test_added_clusters_janitor_before_setup_logs_one_line_each(render, airflow_home, tmp_path):
    """A generic project with an EKS cluster added (its connection runs an exec plugin, which the
    guard would see as a subprocess): each added cluster's task logs its own line, naming its own
    connection and its own clusters/<pkg>/scripts/setup_remote.sh."""
    project = tmp_path / "project" / "remote_kpo"
    shutil.copytree(render(GENERIC).path, project)
    add_cluster(project, ROOT, {"cluster_id": "eks-two", "cloud": "aws"})  # this template, as tests/test_add_cluster.py does
    connections = example_connections(project)
    assert sorted(connections) == ["AIRFLOW_CONN_REMOTE_KUBERNETES", "AIRFLOW_CONN_REMOTE_KUBERNETES_EKS_TWO"]
    env = dag_env(project, airflow_home, [], connections)

    run, attempts = guarded_run(project, env, "remote_pod_janitor_clusters", tmp_path / "janitor")
    assert run.succeeded and run.tasks == {"delete_orphan_pods_eks_two": "success"}, run.log[-4000:]
    assert attempts == [], attempts
    (line,) = example_lines(run.log)
    assert "connection remote_kubernetes_eks_two is still the example" in line, line
    assert "clusters/eks_two/scripts/setup_remote.sh" in line, line


# -- every Kubernetes call has a timeout ----------------------------------------------------------------
def kubernetes_api_methods() -> set[str]:
    """Every method of the installed kubernetes client's API classes that calls the API server."""
    import kubernetes.client

    methods = {"call_api"}
    for name, klass in vars(kubernetes.client).items():
        if (inspect.isclass(klass) and name.endswith("Api") and name != "ApiClient"
                and "api_client" in inspect.signature(klass.__init__).parameters):
            methods |= {m for m, f in vars(klass).items() if inspect.isfunction(f) and not m.startswith("_")}
    return methods


API_METHODS = kubernetes_api_methods()


def untimed_calls(source: str, filename: str) -> tuple[list[str], list[str]]:
    """(calls found, problems): each call of a kubernetes API method must pass _request_timeout
    (not None, not through **kwargs), and no such method may be passed around uncalled (the call
    would be out of sight of this check)."""
    tree = ast.parse(source, filename)
    found, problems, called = [], [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in API_METHODS:
            called.add(id(node.func))
            where = f"{filename}:{node.lineno} {node.func.attr}()"
            found.append(where)
            timeout = next((k.value for k in node.keywords if k.arg == "_request_timeout"), None)
            if timeout is None or (isinstance(timeout, ast.Constant) and timeout.value is None):
                problems.append(f"{where} without _request_timeout")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in API_METHODS and id(node) not in called:
            problems.append(f"{filename}:{node.lineno} {node.attr} used uncalled: call it there with _request_timeout")
    return found, problems


def test_the_scan_knows_the_clients_methods_and_fails_on_a_call_without_a_timeout():
    assert {"list_namespaced_pod", "delete_namespaced_pod", "get_code", "create_self_subject_access_review",
            "read_namespaced_resource_quota", "call_api"} <= API_METHODS
    timed = "api.list_namespaced_pod(ns, _request_timeout=API_TIMEOUT)"
    assert untimed_calls(timed, "x.py") == (["x.py:1 list_namespaced_pod()"], [])
    for bad in ("api.list_namespaced_pod(ns)", "api.list_namespaced_pod(ns, _request_timeout=None)",
                "api.list_namespaced_pod(ns, **options)", "read_named(api.read_namespaced_pod, 'pods', name)"):
        assert untimed_calls(bad, "x.py")[1], bad


@pytest.mark.parametrize("answers", CASES)
def test_every_kubernetes_call_of_the_project_passes_a_timeout(render, answers):
    """include/ and dags/ of every rendered variant, and the added clusters' shared files."""
    project = render(answers).path
    sources = [*project.glob("include/**/*.py"), *project.glob("dags/*.py"), *(ROOT / "cluster" / "files").rglob("*.py")]
    found, problems = [], []
    for path in sources:
        calls, bad = untimed_calls(path.read_text(), str(path.relative_to(path.parents[1])))
        found += calls
        problems += bad
    assert problems == []
    # Not vacuous: the janitor's and the preflight's calls are among those seen.
    seen = {call.split()[-1] for call in found}
    assert {"list_namespaced_pod()", "delete_namespaced_pod()", "get_code()", "create_self_subject_access_review()",
            "read_namespaced_resource_quota()", "read_namespaced_limit_range()"} <= seen, found


# -- the timeout fires ---------------------------------------------------------------------------------
STALL = r"""
import json, sys, threading, time
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from include import janitor, preflight

connect, read = preflight.API_TIMEOUT
result = {"timeout": [connect, read]}
preflight.API_TIMEOUT = (2, 1)  # the project's value, shortened to keep this test short
config = Configuration(host=sys.argv[1])
api = CoreV1Api(ApiClient(config))
# Control: the same call without a timeout is still waiting after 3 s.
waiting = threading.Thread(target=lambda: api.list_namespaced_pod("jobs"), daemon=True)
waiting.start()
waiting.join(3)
result["untimed_still_waiting"] = waiting.is_alive()
for step, call in (("janitor", lambda: janitor.sweep(api, "jobs", lambda **query: {})),
                   ("preflight", lambda: preflight.check_api_server(ApiClient(config)))):
    start = time.monotonic()
    try:
        call()
        result[step] = "returned"
    except Exception as err:
        result[step] = f"{err.__class__.__name__}: {err}"
    result[f"{step}_seconds"] = time.monotonic() - start
print(json.dumps(result))
"""


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.accepted: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_read_timeout_fires_against_a_server_that_never_answers(render, tmp_path):
    project = render(GENERIC)
    server = SilentServer()
    try:
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-c", STALL, server.url], capture_output=True, text=True, timeout=120,
                              env=airflow_env(project.path, tmp_path / "home"), cwd=project.path)
        elapsed = time.monotonic() - start
        accepted = len(server.accepted)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    connect, read = result["timeout"]
    # A connect and a read timeout; the janitor's list, retried 3 times by urllib3, ends well within
    # its task's execution_timeout (10 minutes).
    assert 0 < connect <= 30 and 0 < read <= 120 and 4 * (connect + read) < 600, result
    assert result["untimed_still_waiting"] is True, "control: without a timeout the call waits on"
    assert "Read timed out" in result["janitor"] and result["janitor_seconds"] < 15, result
    assert result["preflight"].startswith("PreflightError: cannot reach the API server") and \
        result["preflight_seconds"] < 15, result
    assert accepted >= 3, "the server accepted the calls: it was the read that timed out, not the connect"
    assert elapsed < 90
