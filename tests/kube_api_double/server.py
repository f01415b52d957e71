"""The HTTPS server, the pod simulation and fault injection of the API double.

See the package docstring for what is real and what is simulated.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .auth import EKS_PREFIX, EksAuthenticator, Identity, Rbac, ServiceAccountTokens, Unauthorized
from .google import GOOGLE_TOKEN_PREFIX, GoogleTokenDouble
from .local import LocalServer, TlsHTTPServer
from .pod_security import PodSecurity
from .quota import OBJECT_PATH, NamespaceLimits, Refused
from .quota import serve as serve_namespace_limits
from .tls import make_ca_and_server_cert

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
XCOM_SIDECAR = "airflow-xcom-sidecar"
EMPTY_XCOM = "__airflow_xcom_result_empty__"
# A watch without timeoutSeconds: the API server closes it after 30-60 min (--min-request-timeout).
WATCH_DEFAULT_TIMEOUT = 1800
# What the kubelet and the API server write when they stop a pod (Kubernetes 1.31+ strings).
DEADLINE_EXCEEDED = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
NODE_SHUTDOWN = ("Terminated", "Pod was terminated in response to imminent node shutdown.")
POD_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>pods|events)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")


def now_iso(t: float | None = None, nanos: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if t is None else t, tz=dt.UTC)
    if nanos:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fault:
    """Misbehaviour for the next requests that match: statuses to answer instead (5xx/429),
    connections to drop without an answer, and a delay before answering."""

    statuses: list[int] = field(default_factory=list)
    drops: int = 0
    delay: float = 0.0
    methods: tuple[str, ...] = ("GET", "POST", "PATCH", "DELETE")
    path_contains: str = "/pods"


@dataclass
class SimPod:
    body: dict
    created: float
    logs: list[tuple[float, str]] = field(default_factory=list)
    base_done: threading.Event = field(default_factory=threading.Event)
    sidecar_killed: threading.Event = field(default_factory=threading.Event)
    deleted: bool = False
    xcom: str | None = None
    process: subprocess.Popen | None = None  # the base container's script while it runs
    stopped: threading.Event = field(default_factory=threading.Event)  # the kubelet killed the containers
    terminal: threading.Event = field(default_factory=threading.Event)  # phase Succeeded or Failed


class ApiDouble(LocalServer):
    """Start with ``ApiDouble(namespace, manifests=[...]).start()``; see the package docstring."""

    def __init__(self, namespace: str, roles: list[dict], bindings: list[dict], *, eks: EksAuthenticator | None = None,
                 google: GoogleTokenDouble | None = None, pending_seconds: float = 0.3, extra_run_seconds: float = 0.0,
                 nodes=None, exit_code: int = 0, namespace_limits: list[dict] | None = None,
                 namespace_labels: dict[str, str] | None = None):
        self.namespace = namespace
        self.rbac = Rbac(roles, bindings)
        # ResourceQuota and LimitRange objects of the namespace: pod admission and GET (quota.py).
        self.limits = NamespaceLimits(namespace, namespace_limits or [])
        # Pod Security admission from the namespace's pod-security.kubernetes.io labels (pod_security.py);
        # each warning a created pod drew: (pod name, the Warning header's text).
        self.pod_security = PodSecurity(namespace_labels)
        self.pod_security_warnings: list[tuple[str, str]] = []
        self.eks = eks
        self.google = google  # GKE: access tokens this Google token double issued
        self.sa_tokens = ServiceAccountTokens()
        self.pending_seconds = pending_seconds
        # nodes(): the labels of each node that exists (e.g. EksDouble.node_groups_ready); a pod
        # with a nodeSelector stays Pending until one matches. None: any pod is scheduled.
        self.nodes = nodes
        self.exit_code = exit_code  # what a container that is not `python -c` exits with
        self.extra_run_seconds = extra_run_seconds
        # SIGTERM, then SIGKILL after this long (a kubelet waits terminationGracePeriodSeconds, 30 s).
        self.kill_grace_seconds = 1.0
        self.revoked_before = 0.0
        self.pods: dict[str, SimPod] = {}
        self.created_pods: list[dict] = []
        self.requests: list[dict] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-api-double-")
        self.ca_data, cert, key = make_ca_and_server_cert(Path(self._tmp.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd = TlsHTTPServer(("127.0.0.1", 0), _Handler, context)
        self.httpd.double = self  # type: ignore[attr-defined]
        self.url = f"https://127.0.0.1:{self.httpd.server_port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        super().stop()
        self._tmp.cleanup()

    def __enter__(self) -> ApiDouble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- identity ----------------------------------------------------------------------------
    def authenticate(self, header: str | None) -> Identity:
        if not header or not header.startswith("Bearer "):
            raise Unauthorized("no bearer token")
        token = header[len("Bearer "):].strip()
        if token.startswith(EKS_PREFIX):
            if self.eks is None:
                raise Unauthorized("this cluster does not accept EKS tokens")
            identity = self.eks.authenticate(token)
            signed = re.search(r"X-Amz-Date=(\d{8}T\d{6}Z)", base64.urlsafe_b64decode(
                token[len(EKS_PREFIX):] + "==").decode()).group(1)
            issued = dt.datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
        elif token.startswith(GOOGLE_TOKEN_PREFIX) and self.google is not None:
            identity, issued = self.google.authenticate(token)  # as GKE: the service account's email
        else:
            identity = self.sa_tokens.authenticate(token)
            claims = token.split(".")[1]
            issued = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["iat"]
        if issued < self.revoked_before:
            raise Unauthorized("token revoked")
        return identity

    def revoke_tokens(self) -> None:
        """Every token made before now gets 401 although its plugin still thinks it valid."""
        self.revoked_before = time.time() + 1

    # -- pods --------------------------------------------------------------------------------
    def live_pods(self) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(p.body) for p in self.pods.values() if not p.deleted]

    def pod_log_lines(self, name: str) -> list[str]:
        return [line for _, line in self.pods[name].logs]

    def create_pod(self, namespace: str, body: dict) -> dict:
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = meta.get("generateName", "pod-") + uuid.uuid4().hex[:5]
        with self.lock:
            if meta["name"] in self.pods and not self.pods[meta["name"]].deleted:
                raise KeyError(meta["name"])
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=str(len(self.requests)),
                        creationTimestamp=now_iso())
            body["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}
            pod = SimPod(body=body, created=time.time())
            self.pods[meta["name"]] = pod
            self.created_pods.append(copy.deepcopy(body))
        threading.Thread(target=self._kubelet, args=(pod,), daemon=True).start()
        return copy.deepcopy(body)

    def _kubelet(self, pod: SimPod) -> None:
        """Pending -> Running -> Succeeded/Failed; the base container's script runs locally."""
        time.sleep(self.pending_seconds)
        spec = pod.body["spec"]
        selector = spec.get("nodeSelector") or {}
        while self.nodes is not None and selector and not any(
                selector.items() <= node.items() for node in self.nodes()):
            if pod.deleted:
                return
            time.sleep(0.2)
        base = next(c for c in spec["containers"] if c["name"] == "base")
        has_sidecar = any(c["name"] == XCOM_SIDECAR for c in spec["containers"])
        started = now_iso()
        with self.lock:
            if pod.deleted or pod.stopped.is_set():
                return
            pod.body["status"] = {
                "phase": "Running", "startTime": started, "hostIP": "10.0.0.10", "podIP": "10.1.0.10",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [_running(c["name"], c.get("image", ""), started) for c in spec["containers"]],
            }
        if spec.get("activeDeadlineSeconds"):  # counted from status.startTime, as the kubelet does
            threading.Thread(target=self._enforce_deadline, args=(pod, spec["activeDeadlineSeconds"]),
                             daemon=True).start()
        exit_code = self._run_base(pod, base)
        # A longer-running pod: one log line every half second, so faults can land mid-run.
        for tick in range(int(self.extra_run_seconds * 2)):
            if pod.deleted or pod.stopped.wait(0.5):
                return
            pod.logs.append((time.time(), f"(double) still running, tick {tick}"))
        finished = now_iso()
        with self.lock:
            if pod.stopped.is_set():  # killed meanwhile: stop_pod wrote the status
                return
            statuses = pod.body["status"]["containerStatuses"]
            for status in statuses:
                if status["name"] == "base":
                    _terminate(status, exit_code, started, finished)
            if not has_sidecar:
                pod.body["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
                pod.terminal.set()
        pod.base_done.set()
        if has_sidecar:
            pod.sidecar_killed.wait(timeout=600)
            with self.lock:
                if pod.stopped.is_set():
                    return
                for status in pod.body["status"]["containerStatuses"]:
                    if status["name"] == XCOM_SIDECAR:
                        _terminate(status, 0, started, now_iso())
                pod.body["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
                pod.terminal.set()

    # -- the cluster stopping a pod on its own ---------------------------------------------------
    def _enforce_deadline(self, pod: SimPod, seconds: float) -> None:
        if not pod.terminal.wait(timeout=seconds):
            self.stop_pod(pod, *DEADLINE_EXCEEDED)

    def evict(self, name: str) -> None:
        """A spot node reclaimed on EKS (managed node group, Karpenter or the node termination
        handler drain it): the Eviction API marks the pod DisruptionTarget and deletes it; the
        kubelet kills the containers; the object is then gone (GET 404, not listed)."""
        with self.lock:
            pod = self.pods[name]
            pod.body["metadata"].update(deletionTimestamp=now_iso(), deletionGracePeriodSeconds=30)
        self.stop_pod(pod, None, None, disruption=("EvictionByEvictionAPI", "Eviction API: evicting"))
        with self.lock:
            pod.deleted = True

    def shut_down_node(self, name: str) -> None:
        """A spot or preemptible VM reclaimed on GKE (graceful node shutdown): the kubelet kills
        the containers and sets the pod Failed, reason Terminated; the object stays until deleted."""
        self.stop_pod(self.pods[name], *NODE_SHUTDOWN, disruption=("TerminationByKubelet", NODE_SHUTDOWN[1]))

    def stop_pod(self, pod: SimPod, reason: str | None, message: str | None,
                 disruption: tuple[str, str] | None = None) -> bool:
        """The kubelet killing a pod: SIGTERM to the script, SIGKILL after ``kill_grace_seconds``;
        running containers end terminated (a process killed by a signal exits 128 + signal; the
        XCom sidecar's shell, PID 1, ignores SIGTERM: 137), the pod Failed with ``reason`` and
        ``message`` (a deletion sets none). False if the pod had already finished or gone."""
        with self.lock:
            status = pod.body["status"]
            if pod.deleted or pod.stopped.is_set() or status.get("phase") in ("Succeeded", "Failed"):
                return False
            pod.stopped.set()
            if disruption:
                status.setdefault("conditions", []).append({
                    "type": "DisruptionTarget", "status": "True", "reason": disruption[0], "message": disruption[1],
                    "lastTransitionTime": now_iso()})
        code = self._kill_script(pod)
        finished = now_iso()
        with self.lock:
            for container in status.get("containerStatuses", []):
                if "running" in container["state"]:
                    _terminate(container, code if container["name"] == "base" else 137,
                               container["state"]["running"]["startedAt"], finished)
            status["phase"] = "Failed"
            status["conditions"] = [c for c in status.get("conditions", []) if c["type"] != "Ready"] + [
                {"type": "Ready", "status": "False", "reason": "PodCompleted"}]
            if reason:
                status.update(reason=reason, message=message)
        pod.terminal.set()
        pod.base_done.set()
        pod.sidecar_killed.set()
        return True

    def _kill_script(self, pod: SimPod) -> int:
        """Stop the base container's script; its exit code (143 if no script was running: the
        simulated rest of a long pod dies of SIGTERM)."""
        process = pod.process
        if process is None or process.poll() is not None:
            return 143
        process.terminate()
        try:
            process.wait(timeout=self.kill_grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 128 - process.returncode if process.returncode < 0 else process.returncode

    def _run_base(self, pod: SimPod, container: dict) -> int:
        command = (container.get("command") or []) + (container.get("args") or [])
        if command[:2] != ["python", "-c"] or len(command) < 3:
            pod.logs.append((time.time(), f"(double) ran {command}"))
            return self.exit_code
        with tempfile.TemporaryDirectory() as xcom_dir:
            script = command[2].replace("/airflow/xcom", xcom_dir)
            proc = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            pod.process = proc
            if pod.stopped.is_set() or pod.deleted:  # killed while starting
                self._kill_script(pod)
            for line in proc.stdout:
                pod.logs.append((time.time(), line.rstrip("\n")))
            code = proc.wait()
            result = Path(xcom_dir) / "return.json"
            pod.xcom = result.read_text() if result.exists() else None
        return code

    def events_for(self, name: str) -> list[dict]:
        pod = self.pods.get(name)
        if pod is None:
            return []
        reasons = [("Scheduled", f"Successfully assigned {self.namespace}/{name} to node-1"),
                   ("Pulled", "Container image already present on machine"), ("Started", "Started container base")]
        return [{"metadata": {"name": f"{name}.{i}", "namespace": self.namespace,
                              "resourceVersion": str(int(pod.created * 1000) * 10 + i)}, "reason": reason,
                 "message": message, "type": "Normal", "involvedObject": {"kind": "Pod", "name": name},
                 "firstTimestamp": now_iso(pod.created), "lastTimestamp": now_iso(pod.created)}
                for i, (reason, message) in enumerate(reasons)]

    # -- accounting --------------------------------------------------------------------------
    def record(self, **entry) -> None:
        with self.lock:
            self.requests.append({"t": time.time(), **entry})

    def next_fault(self, method: str, path: str) -> tuple[int | None, bool, float]:
        with self.lock:
            for fault in self.faults:
                if method in fault.methods and fault.path_contains in path:
                    if fault.drops:
                        fault.drops -= 1
                        return None, True, fault.delay
                    if fault.statuses:
                        return fault.statuses.pop(0), False, fault.delay
                    if fault.delay:
                        return None, False, fault.delay
        return None, False, 0.0


def _running(name: str, image: str, started: str) -> dict:
    return {"name": name, "image": image, "imageID": f"{image}@sha256:0", "ready": True, "restartCount": 0,
            "started": True, "state": {"running": {"startedAt": started}}}


def _terminate(status: dict, code: int, started: str, finished: str) -> None:
    status.update(ready=False, started=False, state={"terminated": {
        "exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started, "finishedAt": finished}})


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _selector_matches(selector: str, labels: dict) -> bool:
    for requirement in filter(None, (r.strip() for r in re.split(r",(?![^()]*\))", selector))):
        if match := re.fullmatch(r"(\S+?)\s*(!=|==|=)\s*(\S*)", requirement):
            key, op, value = match.groups()
            if (labels.get(key) == value) != (op != "!="):
                return False
        elif match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", requirement):
            key, op, values = match.groups()
            inside = labels.get(key) in {v.strip() for v in values.split(",")}
            if inside != (op == "in"):
                return False
        elif requirement.startswith("!"):
            if requirement[1:] in labels:
                return False
        elif requirement not in labels:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-api-double"

    def log_message(self, *args):  # quiet
        pass

    @property
    def double(self) -> ApiDouble:
        return self.server.double  # type: ignore[attr-defined]

    def do_GET(self):  # noqa: N802
        self._serve("GET")

    def do_POST(self):  # noqa: N802
        self._serve("POST")

    def do_PATCH(self):  # noqa: N802
        self._serve("PATCH")

    def do_DELETE(self):  # noqa: N802
        self._serve("DELETE")

    # -- plumbing ----------------------------------------------------------------------------
    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _send(self, code: int, payload: dict, extra_headers: dict | None = None) -> None:
        # Recorded before the answer leaves: a client that reads requests right after its call
        # returns finds it there (recording after the write raced with such readers).
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            self.double.record(**pending, status=code)
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(url.query).items()}
        entry = {"method": method, "path": url.path, "query": query, "agent": self.headers.get("User-Agent", "")}
        body = self._body() if method in ("POST", "PATCH", "DELETE") else {}
        try:
            identity = self.double.authenticate(self.headers.get("Authorization"))
        except Unauthorized as err:
            self.double.record(**entry, status=401, user=None, reason=str(err))
            return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
        entry["user"] = identity.username
        entry["token"] = hashlib.sha256(self.headers["Authorization"].encode()).hexdigest()[:12]
        status, drop, delay = self.double.next_fault(method, url.path)
        if delay:
            time.sleep(delay)
        if drop:
            self.double.record(**entry, status="dropped")
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if status:
            self.double.record(**entry, status=status)
            headers = {"Retry-After": "1"} if status == 429 else {}
            return self._send(status, _status(status, "TooManyRequests" if status == 429 else "InternalError",
                                              "injected fault"), headers)
        self._pending = entry  # _send records it; a streamed answer (watch, exec) is recorded here
        code = self._route(method, url.path, query, body, identity, entry)
        if self._pending is not None:
            self._pending = None
            self.double.record(**entry, status=code)

    def _deny(self, identity: Identity, verb: str, resource: str, name: str | None, namespace: str) -> int:
        target = f'{resource.split("/")[0]} "{name}"' if name else resource.split("/")[0]
        message = (f'{target} is forbidden: User "{identity.username}" cannot {verb} resource "{resource}" '
                   f'in API group "" in the namespace "{namespace}"')
        self._send(403, _status(403, "Forbidden", message))
        return 403

    def _authorize(self, identity, verbs, resource, sub, name, namespace) -> int | None:
        full = f"{resource}/{sub}" if sub else resource
        for verb in verbs:
            if not self.double.rbac.allowed(identity, verb, resource, sub or "", namespace, name=name or ""):
                return self._deny(identity, verb, full, name, namespace)
        return None

    # -- routes ------------------------------------------------------------------------------
    def _route(self, method, path, query, body, identity: Identity, entry: dict) -> int:
        double = self.double
        if path.rstrip("/") == "/version":
            self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-api-double", "gitCommit": "0" * 40,
                             "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
                             "compiler": "gc", "platform": "linux/amd64"})
            return 200
        if path == "/apis/authentication.k8s.io/v1/selfsubjectreviews" and method == "POST":
            body["status"] = {"userInfo": {"username": identity.username, "groups": list(identity.groups)}}
            self._send(201, body)
            return 201
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
            attrs = body["spec"]["resourceAttributes"]
            allowed = double.rbac.allowed(identity, attrs["verb"], attrs["resource"], attrs.get("subresource", ""),
                                          attrs.get("namespace", ""), attrs.get("group", ""), name=attrs.get("name", ""))
            body["status"] = {"allowed": allowed}
            entry["review"] = attrs
            self._send(201, body)
            return 201
        if limits_match := OBJECT_PATH.match(path):  # a ResourceQuota or LimitRange by name (quota.py)
            return serve_namespace_limits(self, method, limits_match, identity, entry)
        match = POD_PATH.match(path)
        if not match:
            self._send(404, _status(404, "NotFound", f"the server could not find the requested resource {path}"))
            return 404
        namespace, resource, name, sub = match["ns"], match["resource"], match["name"], match["sub"]
        websocket = self.headers.get("Upgrade", "").lower() == "websocket"
        verbs = {"GET": ["list"] if name is None else ["get"], "POST": ["create"], "PATCH": ["patch"],
                 "DELETE": ["delete"]}[method]
        watching = method == "GET" and name is None and str(query.get("watch", "")).lower() in ("true", "1")
        if watching:
            verbs = ["watch"]  # the API server authorizes a collection GET with watch=true as verb watch
        if websocket:
            verbs = ["get", "create"]  # Kubernetes >= 1.30 authorizes exec upgrades as both
        entry.update(verb=",".join(verbs), resource=f"{resource}/{sub}" if sub else resource, name=name)
        denied = self._authorize(identity, verbs, resource, sub, name, namespace)
        if denied:
            return denied
        if watching:
            return self._watch(resource, query, entry)
        if resource == "events":
            wanted = (query.get("fieldSelector") or "").removeprefix("involvedObject.name=")
            self._send(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {},
                             "items": double.events_for(wanted)})
            return 200
        if name is None and method == "GET":
            selector = query.get("labelSelector", "")
            items = [p for p in double.live_pods() if p["metadata"]["namespace"] == namespace
                     and _selector_matches(selector, p["metadata"].get("labels") or {})]
            self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
            return 200
        if name is None and method == "POST":
            try:
                with double.lock:  # admission and creation at once, as the API server serializes quota
                    warnings = double.pod_security.admit(body)
                    double.limits.admit(namespace, body, double.live_pods())
                    created = double.create_pod(namespace, body)
                    double.pod_security_warnings += [(created["metadata"]["name"], w) for w in warnings]
            except Refused as refused:  # Pod Security (pod_security.py), LimitRange, validation, ResourceQuota (quota.py)
                self._send(refused.code, _status(refused.code, refused.reason, refused.message))
                return refused.code
            except KeyError:
                self._send(409, _status(409, "AlreadyExists", f'pods "{body["metadata"]["name"]}" already exists'))
                return 409
            quoted = warnings[0].replace("\\", "\\\\").replace('"', '\\"') if warnings else ""
            self._send(201, created, {"Warning": f'299 - "{quoted}"'} if warnings else None)
            return 201
        with double.lock:
            pod = double.pods.get(name)
            if pod is None or pod.deleted or pod.body["metadata"]["namespace"] != namespace:
                pod = None  # pods are namespaced: another namespace's pod of that name is not found here
        if pod is None:
            self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
            return 404
        if sub == "log":
            return self._log(pod, query)
        if sub == "exec" and pod.body["status"].get("phase") in ("Succeeded", "Failed"):
            phase = pod.body["status"]["phase"]
            self._send(400, _status(400, "BadRequest",
                                    f"cannot exec into a container in a completed pod; current phase is {phase}"))
            return 400
        if sub == "exec":
            return self._exec(pod, query) if websocket else self._send(400, _status(400, "BadRequest", "upgrade required")) or 400
        if method == "GET":
            with double.lock:
                self._send(200, copy.deepcopy(pod.body))
            return 200
        if method == "PATCH":
            with double.lock:
                for key in ("labels", "annotations"):
                    pod.body["metadata"].setdefault(key, {}).update((body.get("metadata") or {}).get(key) or {})
                self._send(200, copy.deepcopy(pod.body))
            return 200
        if method == "DELETE":
            with double.lock:
                wanted_uid = (body.get("preconditions") or {}).get("uid")
                if wanted_uid and wanted_uid != pod.body["metadata"]["uid"]:
                    self._send(409, _status(409, "Conflict", f'Operation cannot be fulfilled on Pod "{name}": '
                                            f"Precondition failed: UID in precondition: {wanted_uid}, "
                                            f'UID in object meta: {pod.body["metadata"]["uid"]}'))
                    return 409
                pod.deleted = True
                pod.sidecar_killed.set()
                self._send(200, copy.deepcopy(pod.body))
            double._kill_script(pod)  # the kubelet stops the containers of a deleted pod
            return 200
        return 405

    # -- watch (events) ------------------------------------------------------------------------
    def _watch(self, resource: str, query: dict, entry: dict) -> int:
        """A watch as the API server streams it: 200, chunked, one JSON object per line
        (``{"type": "ADDED", "object": {...}}``), the existing matching events first (only those
        newer than ``resourceVersion`` if given), new ones as they appear, held open until
        ``timeoutSeconds`` or until the client closes (the seconds it was open: ``held`` in the
        request record). Events only ever get ADDED here (no MODIFIED count updates). Pods are not
        watched by the operator, so a pod watch is refused, saying it is not simulated."""
        if resource != "events":
            self._send(501, _status(501, "NotImplemented", "the API double does not simulate watching pods"))
            return 501
        wanted = (query.get("fieldSelector") or "").removeprefix("involvedObject.name=")
        since = int(query["resourceVersion"]) if str(query.get("resourceVersion", "0")) not in ("", "0") else -1
        deadline = time.time() + float(query.get("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent: set[str] = set()
        opened = time.time()
        self.close_connection = True
        try:
            while True:
                for event in self.double.events_for(wanted):
                    meta = event["metadata"]
                    if meta["name"] not in sent and int(meta["resourceVersion"]) > since:
                        sent.add(meta["name"])
                        line = {"type": "ADDED", "object": {"kind": "Event", "apiVersion": "v1", **event}}
                        self._chunk((json.dumps(line) + "\n").encode())
                if time.time() >= deadline or self._client_closed(min(0.1, max(0.0, deadline - time.time()))):
                    break
            self._chunk(b"")
        except OSError:  # the client went away mid-write
            pass
        entry["held"] = time.time() - opened
        return 200

    def _client_closed(self, wait: float) -> bool:
        """True once the client has closed the connection (EOF or reset), waiting up to ``wait`` s."""
        self.connection.settimeout(max(wait, 0.001))
        try:
            return self.connection.recv(1) == b""
        except TimeoutError:
            return False
        except OSError:  # reset, or TLS ended without close_notify
            return True
        finally:
            self.connection.settimeout(None)

    def _log(self, pod: SimPod, query: dict) -> int:
        follow = str(query.get("follow", "")).lower() == "true"
        stamps = str(query.get("timestamps", "")).lower() == "true"
        since = 0.0
        if "sinceSeconds" in query:
            since = time.time() - float(query["sinceSeconds"])
        if "sinceTime" in query:
            since = dt.datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00")).timestamp()
        tail = int(query["tailLines"]) if "tailLines" in query else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        index = max(0, len(pod.logs) - tail) if tail is not None else 0
        while True:
            done = pod.base_done.is_set()  # read before the lines, so none is missed at the end
            new = pod.logs[index:]
            index += len(new)
            for t, line in new:
                if t >= since:
                    self._chunk((f"{now_iso(t, nanos=True)} {line}\n" if stamps else f"{line}\n").encode())
            if not follow or pod.deleted or done:
                break
            time.sleep(0.05)
        self._chunk(b"")
        return 200

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- exec over WebSocket (v4.channel.k8s.io framing) ---------------------------------------
    def _exec(self, pod: SimPod, query: dict) -> int:
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        protocol = next((p for p in offered if p in ("v5.channel.k8s.io", "v4.channel.k8s.io")), offered[0])
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        command = query.get("command", [])
        command = [command] if isinstance(command, str) else command
        script = " ".join(command)
        if "return.json" in script:
            self._ws_send(1, (pod.xcom if pod.xcom else EMPTY_XCOM + "\n").encode())
        else:  # an interactive shell: wait for the kill command on stdin
            while True:
                frame = self._ws_read()
                if frame is None:
                    break
                if frame[:1] == b"\x00" and b"kill" in frame[1:]:
                    pod.sidecar_killed.set()
                    break
        self._ws_send(3, json.dumps({"metadata": {}, "status": "Success"}).encode())
        self._ws_frame(0x8, struct.pack("!H", 1000))
        self.close_connection = True
        return 101

    def _ws_send(self, channel: int, data: bytes) -> None:
        self._ws_frame(0x2, bytes([channel]) + data)

    def _ws_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([size])
        elif size < 65536:
            header += bytes([126]) + struct.pack("!H", size)
        else:
            header += bytes([127]) + struct.pack("!Q", size)
        self.wfile.write(header + payload)
        self.wfile.flush()

    def _ws_read(self) -> bytes | None:
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        opcode, size = head[0] & 0x0F, head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", self.rfile.read(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
        if opcode == 0x8:
            return None
        return data
