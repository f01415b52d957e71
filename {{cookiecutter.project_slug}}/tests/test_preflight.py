"""The preflight checks name the missing piece. Cluster answers are stand-ins here; the
checks, the connection shape and the exec-plugin handling are the project's real code."""

import base64
import datetime as dt
import importlib.util
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from include import preflight
from include import remote_cluster as rc


KUBECONFIG_PATH = pytest.mark.skipif(rc.POD_OPERATOR == "native", reason="the native operator has no kubeconfig connection")
NATIVE_PATH = pytest.mark.skipif(rc.POD_OPERATOR != "native", reason="only the native operator uses the cloud connection")


def filled_extra(**overrides) -> dict:
    args = {"server": "https://203.0.113.10", "ca_data": "Q0E=", "token": overrides.pop("token", "")}
    if rc.EXEC_PLUGIN:
        args.pop("token")
    return rc.connection_extra(**args)


@KUBECONFIG_PATH
def test_placeholder_connection_is_refused_with_the_fix():
    with pytest.raises(preflight.PreflightError, match="example endpoint.*write_connection.py"):
        preflight.check_connection(rc.connection_extra())


@KUBECONFIG_PATH
def test_missing_ca_is_refused():
    extra = rc.connection_extra(server="https://203.0.113.10")
    with pytest.raises(preflight.PreflightError, match="no cluster CA"):
        preflight.check_connection(extra)


@KUBECONFIG_PATH
def test_filled_connection_passes():
    assert "203.0.113.10" in preflight.check_connection(filled_extra())


@pytest.mark.skipif(rc.EXEC_PLUGIN is None, reason="generic clusters and native operators run no exec plugin")
def test_missing_exec_plugin_is_named(monkeypatch):
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    with pytest.raises(preflight.PreflightError, match=f"{rc.EXEC_PLUGIN['command']} is not on PATH"):
        preflight.check_credentials(filled_extra())


GENERIC = pytest.mark.skipif(rc.CLOUD != "generic", reason="only generic clusters carry a ServiceAccount token")
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
HOUR = 3600


def jwt(**claims) -> str:
    """A token shaped as the API server issues it; the signature is not checked, only read past."""
    def b64(doc: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'RS256', 'kid': 'k1'})}.{b64(claims)}.c2lnbmF0dXJl"


def minted(hours: float, lifetime_hours: float = 24) -> str:
    """A token with `hours` of its `lifetime_hours` left at NOW."""
    expires = NOW.timestamp() + hours * HOUR
    return jwt(sub="system:serviceaccount:jobs:runner", exp=expires, iat=expires - lifetime_hours * HOUR)


@GENERIC
def test_expired_service_account_token_is_refused_with_the_rotation():
    with pytest.raises(preflight.PreflightError, match="expired at 2026-03-01 11:00 UTC \\(1.0 h ago\\)") as err:
        preflight.describe_token(minted(-1), now=NOW)
    assert "scripts/deploy.sh --deployment-id <id> --rotate-token" in str(err.value)
    with pytest.raises(preflight.PreflightError, match="expired"):  # through the step the DAG runs, at the real time
        preflight.check_credentials(filled_extra(token=jwt(exp=time.time() - 60, iat=time.time() - 3660)))


@GENERIC
def test_time_left_is_reported_against_the_lifetime():
    finding = preflight.describe_token(minted(18), now=NOW)
    assert finding == "ServiceAccount token valid until 2026-03-02 06:00 UTC (18.0 h of 24.0 h left)"
    assert not isinstance(finding, preflight.Attention)
    assert "h of 2.0 h left" in preflight.check_credentials(filled_extra(token=jwt(exp=time.time() + 7200, iat=time.time())))


@GENERIC
@pytest.mark.parametrize(("hours", "lifetime", "warned"), [(5.9, 24, True), (6.1, 24, False), (0.2, 1, True), (0.5, 1, False)])
def test_under_a_quarter_of_the_lifetime_passes_with_a_warning(hours, lifetime, warned):
    finding = preflight.describe_token(minted(hours, lifetime), now=NOW)
    assert isinstance(finding, preflight.Attention) is warned, finding
    if warned:
        assert "under a quarter: rotate it soon: scripts/deploy.sh --deployment-id <id> --rotate-token" in finding
        assert f"of its {lifetime:.1f} h left" in finding


@GENERIC
def test_tokens_without_dates_pass_without_guessing():
    assert "time left unknown" in preflight.describe_token("not-a-jwt", now=NOW)
    assert "time left unknown" in preflight.describe_token(jwt(sub="legacy-secret-token"), now=NOW)  # no exp claim
    no_iat = preflight.describe_token(jwt(exp=NOW.timestamp() + 2 * HOUR), now=NOW)
    assert no_iat == "ServiceAccount token valid until 2026-03-01 14:00 UTC (2.0 h left)"
    with pytest.raises(preflight.PreflightError, match="no ServiceAccount token"):
        preflight.describe_token("", now=NOW)


def load_preflight_dag():
    spec = importlib.util.spec_from_file_location("check_remote_cluster_under_test",
                                                  Path(__file__).resolve().parent.parent / "dags" / "check_remote_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_step_that_needs_attention_logs_a_warning_and_passes(monkeypatch):
    dag_file = load_preflight_dag()
    warnings = []
    monkeypatch.setattr(dag_file.log, "warning", lambda fmt, *args: warnings.append(fmt % args))
    assert dag_file.step(lambda: preflight.Attention("rotate soon")) == "WARNING: rotate soon"
    assert warnings == ["rotate soon"]
    assert dag_file.step(lambda: "fine") == "fine" and warnings == ["rotate soon"]
    with pytest.raises(dag_file.AirflowFailException, match="missing"):
        dag_file.step(lambda: (_ for _ in ()).throw(preflight.PreflightError("missing")))


@NATIVE_PATH
def test_cloud_connection_of_this_project_passes_and_another_is_named():
    assert rc.CONNECTION_TYPE in preflight.check_cloud_connection(rc.CONNECTION_TYPE, rc.connection_extra())
    with pytest.raises(preflight.PreflightError, match="of type 'kubernetes'"):
        preflight.check_cloud_connection("kubernetes", rc.connection_extra())
    key = next(iter(rc.connection_extra()))
    with pytest.raises(preflight.PreflightError, match=f"differs from this project's in {key}"):
        preflight.check_cloud_connection(rc.CONNECTION_TYPE, {**rc.connection_extra(), key: "something-else"})


@NATIVE_PATH
def test_cloud_identity_must_be_the_one_rbac_binds():
    if rc.CLOUD == "aws":
        right = f"arn:aws:sts::{rc.AWS_ACCOUNT_ID}:assumed-role/{rc.RUNNER_ROLE_NAME}/Airflow_{rc.CONNECTION_ID}"
        wrong = "arn:aws:sts::111122223333:assumed-role/astro-deployment/x"
    else:
        right, wrong = rc.RUNNER_IDENTITY, "someone@example.com"
    assert right in preflight.check_cloud_identity(right)
    with pytest.raises(preflight.PreflightError, match="signs in as"):
        preflight.check_cloud_identity(wrong)


class FakeAuthorization:
    """Answers SelfSubjectAccessReviews from a set of denied (verb, resource, subresource)."""

    def __init__(self, denied):
        self.denied = denied

    def create_self_subject_access_review(self, body):
        attrs = body["spec"]["resourceAttributes"]
        assert attrs["namespace"] == rc.REMOTE_NAMESPACE
        key = (attrs["verb"], attrs["resource"], attrs["subresource"])
        return SimpleNamespace(status=SimpleNamespace(allowed=key not in self.denied))


def test_every_missing_permission_is_listed_first_one_named(monkeypatch):
    import kubernetes.client

    denied = {("get", "pods", "log"), ("list", "events", "")}
    monkeypatch.setattr(kubernetes.client, "AuthorizationV1Api", lambda api_client: FakeAuthorization(denied))
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_permissions(api_client=None)
    assert "get pods/log, list events (first: get pods/log)" in str(err.value)
    assert "kubectl apply -f k8s/" in str(err.value)


def test_all_permissions_allowed(monkeypatch):
    import kubernetes.client

    monkeypatch.setattr(kubernetes.client, "AuthorizationV1Api", lambda api_client: FakeAuthorization(set()))
    assert f"all {len(rc.REQUIRED_PERMISSIONS)} permissions" in preflight.check_permissions(api_client=None)
