"""The checks behind dags/check_remote_cluster.py, one function a step, in the order a
remote pod needs them: connection -> credentials -> API server -> permissions.

Each returns a short finding on success and raises ``PreflightError`` naming the missing
piece and how to fix it otherwise. No Airflow import here, so the project tests can call them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess

from include import remote_cluster as rc

# Generic clusters: a new ServiceAccount token, minted and loaded into the deployment in one command.
ROTATE_TOKEN = ("scripts/deploy.sh --deployment-id <id> --rotate-token --kubeconfig <admin kubeconfig> "
                "(locally: python3 scripts/write_connection.py --kubeconfig <admin kubeconfig>, then astro dev restart)")
# Under this share of its lifetime left, the token check passes with a warning.
LOW_TOKEN_SHARE = 0.25
FIX_CONNECTION = "run `scripts/setup_remote.sh` (or `python3 scripts/write_connection.py`) and restart (`astro dev restart`)"
FIX_IDENTITY = {
    "aws": "create the access entry: aws eks create-access-entry --cli-input-json file://aws/access-entry.json",
    "gcp": "grant roles/container.clusterViewer to the service account (README, step 2)",
    "azure": "add the federated credential to the managed identity (README, step 2)",
    "generic": f"mint and load a new token: {ROTATE_TOKEN}",
}[rc.CLOUD]
FIX_RBAC = "run scripts/setup_remote.sh, or kubectl apply -f k8s/ as a cluster admin"


class PreflightError(Exception):
    """A step failed; the message says what is missing and how to fix it."""


class Attention(str):
    """A finding of a step that passed but needs action soon: logged as a warning, the run succeeds."""


def kube_config_of(extra: dict) -> dict | None:
    """The connection's kube_config extra, whether stored as a dict or as a JSON string."""
    kube_config = extra.get("kube_config")
    return json.loads(kube_config) if isinstance(kube_config, str) else kube_config


def check_connection(extra: dict) -> str:
    kube_config = kube_config_of(extra)
    if not isinstance(kube_config, dict):
        raise PreflightError(f"connection {rc.KUBERNETES_CONN_ID} has no kube_config extra: {FIX_CONNECTION}")
    cluster = kube_config["clusters"][0]["cluster"]
    if cluster.get("server", rc.PLACEHOLDER_SERVER) == rc.PLACEHOLDER_SERVER:
        raise PreflightError(f"connection {rc.KUBERNETES_CONN_ID} still has the example endpoint: {FIX_CONNECTION}")
    if not cluster.get("certificate-authority-data"):
        raise PreflightError(f"connection {rc.KUBERNETES_CONN_ID} has no cluster CA: {FIX_CONNECTION}")
    if extra.get("namespace", rc.REMOTE_NAMESPACE) != rc.REMOTE_NAMESPACE:
        raise PreflightError(f"connection namespace {extra['namespace']!r} is not {rc.REMOTE_NAMESPACE!r}: {FIX_CONNECTION}")
    return f"endpoint {cluster['server']}, CA present"


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
        version = VersionApi(api_client).get_code().git_version
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
        review = AuthenticationV1Api(api_client).create_self_subject_review(body)
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
        if not api.create_self_subject_access_review(body).status.allowed:
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
