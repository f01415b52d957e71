"""The checks behind dags/check_remote_cluster.py, one function a step, in the order a
remote pod needs them: connection -> credentials -> API server -> permissions -> quota.

Each returns a short finding on success and raises ``PreflightError`` naming the missing
piece and how to fix it otherwise. No Airflow import at module level, so the project tests can
call them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
{%- if cookiecutter._cluster_id %}
import re
{%- endif %}
import shutil
import subprocess
from decimal import Decimal

from . import remote_cluster as rc

# Generic clusters: a new ServiceAccount token, minted and loaded into the deployment in one command.
{%- if cookiecutter._cluster_id %}
ROTATE_TOKEN = ("python3 scripts/write_connection.py --kubeconfig <admin kubeconfig>, then "
                "scripts/deploy.sh --deployment-id <id> (locally: astro dev restart)")
{%- else %}
ROTATE_TOKEN = ("scripts/deploy.sh --deployment-id <id> --rotate-token --kubeconfig <admin kubeconfig> "
                "(locally: python3 scripts/write_connection.py --kubeconfig <admin kubeconfig>, then astro dev restart)")
{%- endif %}
# Under this share of its lifetime left, the token check passes with a warning.
LOW_TOKEN_SHARE = 0.25
# (connect, read) seconds: every Kubernetes API call of this project's own code (this preflight,
# include/janitor.py) passes it as _request_timeout. The client has no default of its own and
# would wait forever on an endpoint that accepts a connection and never answers (a stalled
# proxy or load balancer); urllib3 retries a timed-out GET 3 times.
API_TIMEOUT = (10, 60)
FIX_CONNECTION = "run `scripts/setup_remote.sh` (or `python3 scripts/write_connection.py`) and restart (`astro dev restart`)"
FIX_IDENTITY = {
    "aws": "create the access entry: aws eks create-access-entry --cli-input-json file://aws/access-entry.json",
    "gcp": "grant roles/container.clusterViewer to the service account (README, step 2)",
    "azure": "add the federated credential to the managed identity (README, step 2)",
    "generic": f"mint and load a new token: {ROTATE_TOKEN}",
}[rc.CLOUD]
FIX_RBAC = "run scripts/setup_remote.sh, or kubectl apply -f k8s/ as a cluster admin"
FIX_QUOTA = ("raise it in k8s/resourcequota.yaml and NAMESPACE_QUOTA (include/remote_cluster.py) and apply it "
             "(scripts/setup_remote.sh), or wait for running pods to finish")
FIX_LIMIT_RANGE = "apply k8s/resource-defaults.yaml: scripts/setup_remote.sh, or kubectl apply -f k8s/ as a cluster admin"
{%- if cookiecutter._cluster_id %}
# This cluster's files are in its own folder of the project: the messages name them there
# (scripts/deploy.sh, dags/ and README stay the project's).
FOLDER = {{ ("clusters/" ~ cookiecutter._cluster_id | replace("-", "_") ~ "/") | tojson }}
OWN_PATH = re.compile(r"(?<![\w.-])(?<![\w.-]/)(?=(?:k8s|aws|gcp)/|include/remote_cluster\.py"
                      r"|scripts/(?:setup_remote\.sh|write_connection\.py))")


def in_folder(message: str) -> str:
    """The message with this cluster's file paths under its folder: k8s/ -> clusters/<pkg>/k8s/."""
    return OWN_PATH.sub(FOLDER, message)
{%- endif %}


class PreflightError(Exception):
    """A step failed; the message says what is missing and how to fix it."""
{%- if cookiecutter._cluster_id %}

    def __init__(self, message: str) -> None:
        super().__init__(in_folder(message))
{%- endif %}


class Attention(str):
    """A finding of a step that passed but needs action soon: logged as a warning, the run succeeds."""
{%- if cookiecutter._cluster_id %}

    def __new__(cls, message: str) -> Attention:
        return super().__new__(cls, in_folder(message))
{%- endif %}


def kube_config_of(extra: dict) -> dict | None:
    """The connection's kube_config extra, whether stored as a dict or as a JSON string."""
    kube_config = extra.get("kube_config")
    return json.loads(kube_config) if isinstance(kube_config, str) else kube_config


def example_connection(extra: dict) -> bool:
    """True while the connection is still the example that scripts/write_connection.py
    --placeholder writes at render time (its server is PLACEHOLDER_SERVER): nothing is set up
    yet. The one test of it: the preflight fails on it, the scheduled janitor skips its sweep."""
    try:
        kube_config = kube_config_of(extra)
        server = kube_config["clusters"][0]["cluster"].get("server", rc.PLACEHOLDER_SERVER)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):  # no kubeconfig: not the example
        return False
    return server == rc.PLACEHOLDER_SERVER


def not_set_up(extra: dict) -> Attention | None:
    """The one line a scheduled DAG logs, instead of calling the cluster, while the connection
    is still the example; None once it is set up."""
    if not example_connection(extra):
        return None
    return Attention(f"connection {rc.KUBERNETES_CONN_ID} is still the example ({rc.PLACEHOLDER_SERVER}): "
                     f"nothing to do until the remote cluster is set up: {FIX_CONNECTION}")


def check_connection(extra: dict) -> str:
    kube_config = kube_config_of(extra)
    if not isinstance(kube_config, dict):
        raise PreflightError(f"connection {rc.KUBERNETES_CONN_ID} has no kube_config extra: {FIX_CONNECTION}")
    if example_connection(extra):
        raise PreflightError(f"connection {rc.KUBERNETES_CONN_ID} still has the example endpoint: {FIX_CONNECTION}")
    cluster = kube_config["clusters"][0]["cluster"]
    if not cluster.get("certificate-authority-data"):
        raise PreflightError(f"connection {rc.KUBERNETES_CONN_ID} has no cluster CA: {FIX_CONNECTION}")
    if extra.get("namespace", rc.REMOTE_NAMESPACE) != rc.REMOTE_NAMESPACE:
        raise PreflightError(f"connection namespace {extra['namespace']!r} is not {rc.REMOTE_NAMESPACE!r}: {FIX_CONNECTION}")
    finding = f"endpoint {cluster['server']}, CA present"
    if rc.XCOM_ENABLED and (stale := stale_sidecar(extra)):
        return Attention(f"{finding}, but the XCom sidecar's {' and '.join(stale)} in the connection differ from "
                         f"include/remote_cluster.py (the connection's win): {FIX_CONNECTION}")
    return finding


def stale_sidecar(extra: dict) -> list[str]:
    """The connection's XCom sidecar settings that differ from XCOM_SIDECAR_IMAGE / _RESOURCES."""
    stale = [] if extra.get("xcom_sidecar_container_image") == rc.XCOM_SIDECAR_IMAGE else ["image"]
    try:
        resources = json.loads(extra.get("xcom_sidecar_container_resources") or "null")
    except (TypeError, ValueError):  # not a JSON string: the operator would fail on it too
        resources = None
    if resources != rc.XCOM_SIDECAR_RESOURCES:
        stale.append("resources")
    return stale


def check_credentials(extra: dict) -> str:
    """Run the kubeconfig's exec plugin exactly as the Kubernetes client will."""
    user = kube_config_of(extra)["users"][0]["user"]
    if "exec" not in user:
        return describe_token(user.get("token", ""))
    plugin = user["exec"]
    if shutil.which(plugin["command"]) is None:
        raise PreflightError(
            f"{plugin['command']} is not on PATH in this image: rebuild it (`astro dev restart`); "
            "the Dockerfile installs it for the workers and the triggerer"
        )
    env = dict(os.environ, KUBERNETES_EXEC_INFO=json.dumps(
        {"kind": "ExecCredential", "apiVersion": plugin["apiVersion"], "spec": {"interactive": False}}))
    for item in plugin.get("env") or []:
        env[item["name"]] = item["value"]
    try:
        done = subprocess.run([plugin["command"], *plugin.get("args", [])], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise PreflightError(
            f"{plugin['command']} did not answer within 120 s (network to the cloud's token service?)"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PreflightError(
            f"{plugin['command']} could not make a token: {last} (check the cloud credentials; README, Run locally)"
        )
    status = json.loads(done.stdout).get("status", {})
    if not status.get("token"):
        raise PreflightError(f"{plugin['command']} printed no token")
    return f"{plugin['command']} made a token, expires {status.get('expirationTimestamp', 'unknown')}"


def token_times(token: str, now: dt.datetime | None = None) -> tuple[dt.datetime, float, float | None] | None:
    """(expiry, seconds left, lifetime in seconds or None) of a JWT bearer token, from its
    ``exp`` and ``iat`` claims; None if it is not a JWT with an expiry. Decoded without
    verifying the signature: the token is the cluster's to verify, this only reads its dates."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        expires_at = float(claims["exp"])
        issued_at = float(claims["iat"]) if "iat" in claims else None
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    expires = dt.datetime.fromtimestamp(expires_at, tz=dt.UTC)
    lifetime = expires_at - issued_at if issued_at is not None and expires_at > issued_at else None
    return expires, (expires - now).total_seconds(), lifetime


def span(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(seconds, 0) / 60:.0f} min"


def describe_token(token: str, now: dt.datetime | None = None) -> str:
    """The ServiceAccount token's time left: fails when expired, warns under a quarter of its lifetime."""
    if not token:
        raise PreflightError(f"the connection has no ServiceAccount token: {FIX_CONNECTION}")
    times = token_times(token, now)
    if times is None:
        return "static bearer token (not a JWT with an expiry; time left unknown)"
    expires, left, lifetime = times
    until = f"{expires:%Y-%m-%d %H:%M} UTC"
    if left <= 0:
        raise PreflightError(f"the ServiceAccount token expired at {until} ({span(-left)} ago): {FIX_IDENTITY}")
    if lifetime is None:
        return f"ServiceAccount token valid until {until} ({span(left)} left)"
    if left < LOW_TOKEN_SHARE * lifetime:
        return Attention(f"ServiceAccount token valid until {until}: {span(left)} of its {span(lifetime)} left, "
                         f"under a quarter: rotate it soon: {ROTATE_TOKEN}")
    return f"ServiceAccount token valid until {until} ({span(left)} of {span(lifetime)} left)"


def check_api_server(api_client) -> str:
    from kubernetes.client import AuthenticationV1Api, VersionApi
    from kubernetes.client.exceptions import ApiException

    try:
        version = VersionApi(api_client).get_code(_request_timeout=API_TIMEOUT).git_version
    except ApiException as err:
        if err.status == 401:
            raise PreflightError(f"the API server rejected the token (401): {FIX_IDENTITY}") from None
        raise PreflightError(f"the API server answered {err.status} {err.reason}") from None
    except Exception as err:  # noqa: BLE001 - urllib3/ssl errors: say which piece
        hint = (
            "wrong CA" if "CERTIFICATE" in str(err).upper()
            else "endpoint not reachable from here (private endpoint, firewall or authorized IP ranges?)"
        )
        raise PreflightError(f"cannot reach the API server: {hint}: {err.__class__.__name__}") from None
    try:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        review = AuthenticationV1Api(api_client).create_self_subject_review(body, _request_timeout=API_TIMEOUT)
        who = review.status.user_info
        identity = f"{who.username} groups={','.join(who.groups or [])}"
    except ApiException:
        identity = "identity not shown (SelfSubjectReview needs Kubernetes >= 1.28)"
    return f"Kubernetes {version}; authenticated as {identity}"


def check_permissions(api_client) -> str:
    """One SelfSubjectAccessReview per call the pod operator makes; all must be allowed."""
    from kubernetes.client import AuthorizationV1Api

    api = AuthorizationV1Api(api_client)
    denied = []
    for verb, resource, subresource in rc.REQUIRED_PERMISSIONS:
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": rc.REMOTE_NAMESPACE, "verb": verb,
                                            "resource": resource, "subresource": subresource}},
        }
        if not api.create_self_subject_access_review(body, _request_timeout=API_TIMEOUT).status.allowed:
            denied.append(f"{verb} {resource}/{subresource}" if subresource else f"{verb} {resource}")
    if denied:
        raise PreflightError(
            f"missing in namespace {rc.REMOTE_NAMESPACE}: {', '.join(denied)} (first: {denied[0]}): {FIX_RBAC}"
        )
    return f"all {len(rc.REQUIRED_PERMISSIONS)} permissions allowed in {rc.REMOTE_NAMESPACE}"


def check_cloud_connection(conn_type: str, extra: dict) -> str:
    """The native operator's connection: the cloud's own type, pointing at this project's identity."""
    if conn_type != rc.CONNECTION_TYPE:
        raise PreflightError(f"connection {rc.CONNECTION_ID} is of type {conn_type!r}, the native operator needs "
                             f"{rc.CONNECTION_TYPE!r}: {FIX_CONNECTION}")
    expected = rc.connection_extra()
    differs = sorted(key for key, value in expected.items() if extra.get(key) != value)
    if differs:
        raise PreflightError(f"connection {rc.CONNECTION_ID} differs from this project's in {', '.join(differs)}: "
                             f"{FIX_CONNECTION}")
    return f"{rc.CONNECTION_TYPE} connection {rc.CONNECTION_ID}: {', '.join(f'{k}={v}' for k, v in expected.items())}"


def check_cloud_identity(identity: str) -> str:
    """Who the cloud connection signs in as; RBAC (k8s/rolebinding.yaml) is bound to one identity."""
    expected = getattr(rc, "RUNNER_ROLE_NAME", None) or getattr(rc, "RUNNER_IDENTITY", "")
    if rc.CLOUD == "aws" and f":assumed-role/{expected}/" not in identity:
        raise PreflightError(f"the connection signs in as {identity}, not as role {expected}: check the trust "
                             f"policy and ExternalId (aws/trust-policy.json) and the deployment's workload identity")
    if rc.CLOUD == "gcp" and identity != expected:
        raise PreflightError(f"the connection signs in as {identity}, but k8s/rolebinding.yaml binds {expected}: "
                             f"run as that service account (locally: impersonate it, see README)")
    return f"signed in as {identity}"


# -- quota ------------------------------------------------------------------------------------
# Quota keys for which the API server refuses a pod with a container that lacks the request or
# limit (after the LimitRange's defaults), and where each is read from the container.
REQUIRED_BY_QUOTA = {"cpu": ("requests", "cpu"), "requests.cpu": ("requests", "cpu"),
                     "memory": ("requests", "memory"), "requests.memory": ("requests", "memory"),
                     "limits.cpu": ("limits", "cpu"), "limits.memory": ("limits", "memory")}


def quantity(value) -> Decimal:
    from kubernetes.utils.quantity import parse_quantity

    return parse_quantity(value)


def shown(key: str, value: Decimal) -> str:
    """A quantity as Kubernetes prints it: CPU in millicores when fractional, memory in Ki/Mi/Gi."""
    if key.endswith(("memory", "ephemeral-storage")) and value == int(value) and value:
        for suffix, power in (("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)):
            if value % (1 << power) == 0:
                return f"{int(value) >> power}{suffix}"
    if value != int(value):
        return f"{int(value * 1000)}m"
    return str(int(value))


def example_pod_containers(extra: dict | None = None) -> list[dict]:
    """remote_kpo's containers with their own requests and limits: the base container and, with
    XCom, the sidecar as the operator makes it: with the native operator XCOM_SIDECAR_RESOURCES
    (include/remote_pod.py sets them), else the connection's xcom_sidecar_container_resources (a
    JSON string) if set, else the provider's (cncf-kubernetes 10.25: 1m CPU, 10Mi, no limit)."""
    containers = [{"name": "base", "requests": dict(rc.EXAMPLE_POD_REQUESTS), "limits": dict(rc.EXAMPLE_POD_LIMITS)}]
    if rc.XCOM_ENABLED:
        from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults

        configured = (extra or {}).get("xcom_sidecar_container_resources")
        if rc.POD_OPERATOR == "native":
            resources = rc.XCOM_SIDECAR_RESOURCES
        elif configured:
            resources = json.loads(configured) if isinstance(configured, str) else configured
        else:
            default = PodDefaults.SIDECAR_CONTAINER.resources
            resources = {"requests": default.requests, "limits": default.limits}
        containers.append({"name": PodDefaults.SIDECAR_CONTAINER_NAME, "requests": dict(resources.get("requests") or {}),
                           "limits": dict(resources.get("limits") or {})})
    return containers


def admitted(containers: list[dict], default_requests: dict, default_limits: dict) -> list[dict]:
    """The containers as the API server admits them: a missing request defaults to the container's
    own limit, then the LimitRange fills in what is still missing."""
    return [{"name": c["name"], "limits": {**default_limits, **c["limits"]},
             "requests": {**default_requests, **c["limits"], **c["requests"]}} for c in containers]


def quota_usage(containers: list[dict]) -> dict[str, Decimal]:
    """What a ResourceQuota charges for one pod of these (admitted) containers."""
    usage = {"pods": Decimal(1), "count/pods": Decimal(1)}
    for container in containers:
        for kind in ("requests", "limits"):
            for resource, value in container[kind].items():
                keys = [f"{kind}.{resource}"] + ([resource] if kind == "requests" and "/" not in resource else [])
                for key in keys:
                    usage[key] = usage.get(key, Decimal(0)) + quantity(value)
    return usage


def ordered(keys) -> list[str]:
    """pods first, then requests, then limits."""
    return sorted(keys, key=lambda k: (k not in ("pods", "count/pods"), k.startswith("limits."), k))


def describe_quota(hard: dict | None, used: dict, limit_range_found: bool, default_requests: dict,
                   default_limits: dict, containers: list[dict] | None = None) -> str:
    """The quota's use, and whether remote_kpo's pod (``containers``, by default as
    example_pod_containers() makes them) fits: fails when the API server would refuse it,
    passes with a warning when the quota or the LimitRange is missing."""
    name = f"ResourceQuota {rc.QUOTA_NAME}"
    if hard is None:
        return Attention(f"no {name} in namespace {rc.REMOTE_NAMESPACE}: nothing caps its pods, CPU, memory or GPUs; "
                         f"apply k8s/resourcequota.yaml: scripts/setup_remote.sh, or kubectl apply -f k8s/ as a cluster admin")
    if not hard:
        return Attention(f"{name} is not counted yet (the quota controller fills in its status within seconds; "
                         "pods are refused until then): run the preflight again")
    containers = admitted(example_pod_containers() if containers is None else containers, default_requests, default_limits)
    lacking = {}  # as the API server words it: "must specify limits.memory for: <container>; ..."
    for key in sorted(set(hard) & set(REQUIRED_BY_QUOTA)):
        kind, resource = REQUIRED_BY_QUOTA[key]
        if names := sorted(c["name"] for c in containers if resource not in c[kind]):
            lacking[key] = names
    if lacking:
        what = "; ".join(f"{key} for: {','.join(names)}" for key, names in lacking.items())
        cause = "it is missing" if not limit_range_found else "it gives no such default"
        raise PreflightError(f"{name} refuses remote_kpo's pod: must specify {what} (the defaults come from "
                             f"LimitRange {rc.LIMIT_RANGE_NAME}: {cause}): {FIX_LIMIT_RANGE}")
    above = [f"{c['name']} requests {resource} {value} above its limit {c['limits'][resource]}"
             for c in containers for resource, value in c["requests"].items()
             if resource in c["limits"] and quantity(value) > quantity(c["limits"][resource])]
    if above:
        raise PreflightError(f"the API server refuses remote_kpo's pod: {'; '.join(above)}: give the container its "
                             f"own limit, or raise the default in k8s/resource-defaults.yaml and apply it")
    need = quota_usage(containers)
    report = ", ".join(f"{key} {used.get(key, '0')}/{hard[key]}" for key in ordered(hard))
    needed = [key for key in ordered(hard) if need.get(key)]
    short = [f"{key} {shown(key, need[key])} with {shown(key, max(quantity(hard[key]) - quantity(used.get(key, '0')), 0))} left"
             for key in needed if quantity(used.get(key, "0")) + need[key] > quantity(hard[key])]
    if short:
        raise PreflightError(f"remote_kpo's pod does not fit in {name} ({report}): it needs {'; '.join(short)}: {FIX_QUOTA}")
    finding = f"{name}: {report}; remote_kpo's pod fits ({', '.join(f'{k} {shown(k, need[k])}' for k in needed)})"
    if not limit_range_found:
        return Attention(f"{finding}, but LimitRange {rc.LIMIT_RANGE_NAME} is missing: the quota refuses containers "
                         f"that set no requests or memory limit: {FIX_LIMIT_RANGE}")
    return finding


def read_named(read, resource: str, name: str):
    """One object of this namespace by name, read by ``read()``; None when it does not exist."""
    from kubernetes.client.exceptions import ApiException

    try:
        return read()
    except ApiException as err:
        if err.status == 404:
            return None
        if err.status == 403:
            raise PreflightError(f"may not get {resource}/{name} in namespace {rc.REMOTE_NAMESPACE}: {FIX_RBAC}") from None
        raise PreflightError(f"reading {resource}/{name} answered {err.status} {err.reason}") from None


def check_quota(api_client, extra: dict | None = None) -> str:
    """The namespace's ResourceQuota (k8s/resourcequota.yaml): its use, and whether remote_kpo's
    pod, with the LimitRange's defaults (k8s/resource-defaults.yaml), fits in what is left. ``extra``:
    the connection's, which may set the XCom sidecar's resources."""
    from kubernetes.client import CoreV1Api

    api = CoreV1Api(api_client)
    namespace = rc.REMOTE_NAMESPACE
    quota = read_named(lambda: api.read_namespaced_resource_quota(rc.QUOTA_NAME, namespace, _request_timeout=API_TIMEOUT),
                       "resourcequotas", rc.QUOTA_NAME)
    limit_range = read_named(lambda: api.read_namespaced_limit_range(rc.LIMIT_RANGE_NAME, namespace,
                                                                     _request_timeout=API_TIMEOUT),
                             "limitranges", rc.LIMIT_RANGE_NAME)
    default_requests, default_limits = {}, {}
    for item in (limit_range.spec.limits or []) if limit_range else []:
        if item.type == "Container":
            default_requests.update(item.default_request or {})
            default_limits.update(item.default or {})
    hard = None if quota is None else dict((quota.status and quota.status.hard) or {})
    used = dict((quota and quota.status and quota.status.used) or {})
    return describe_quota(hard, used, limit_range is not None, default_requests, default_limits,
                          example_pod_containers(extra))
