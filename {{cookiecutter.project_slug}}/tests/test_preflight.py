"""The preflight checks name the missing piece. Cluster answers are stand-ins here; the
checks, the connection shape and the exec-plugin handling are the project's real code."""

import base64
import json
import time
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


@pytest.mark.skipif(rc.CLOUD != "generic", reason="only generic clusters carry a token")
def test_expired_service_account_token_is_refused():
    def jwt(exp: float) -> str:
        claims = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
        return f"e30.{claims}.sig"

    with pytest.raises(preflight.PreflightError, match="expired"):
        preflight.check_credentials(filled_extra(token=jwt(time.time() - 60)))
    assert "h left" in preflight.check_credentials(filled_extra(token=jwt(time.time() + 7200)))


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
