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
import yaml

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

    def create_self_subject_access_review(self, body, _request_timeout):
        assert _request_timeout == preflight.API_TIMEOUT
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


# -- quota --------------------------------------------------------------------------------------
PROJECT = Path(__file__).resolve().parent.parent
DEFAULTS = (rc.CONTAINER_DEFAULT_REQUESTS, rc.CONTAINER_DEFAULT_LIMITS)
# remote_kpo's pod as the quota counts it: the base container and, with XCom, the sidecar (1m CPU,
# 10Mi, and a memory limit: with the native operator XCOM_SIDECAR_RESOURCES', else, with no
# resources in the connection, the LimitRange's default).
SIDECAR_LIMIT_MI = int(rc.XCOM_SIDECAR_RESOURCES["limits"]["memory"].removesuffix("Mi")) if rc.POD_OPERATOR == "native" else 256
NEEDS = (f"pods 1, requests.cpu 101m, requests.memory 138Mi, limits.memory {256 + SIDECAR_LIMIT_MI}Mi" if rc.XCOM_ENABLED
         else "pods 1, requests.cpu 100m, requests.memory 128Mi, limits.memory 256Mi")


def manifest(name: str) -> dict:
    return yaml.safe_load((PROJECT / "k8s" / f"{name}.yaml").read_text())


def test_namespace_limits_equal_the_constants():
    quota, limit_range = manifest("resourcequota"), manifest("resource-defaults")
    assert (quota["metadata"]["name"], limit_range["metadata"]["name"]) == (rc.QUOTA_NAME, rc.LIMIT_RANGE_NAME)
    assert quota["spec"]["hard"] == rc.NAMESPACE_QUOTA, "k8s/resourcequota.yaml and NAMESPACE_QUOTA differ: change both"
    assert limit_range["spec"]["limits"] == [{"type": "Container", "defaultRequest": rc.CONTAINER_DEFAULT_REQUESTS,
                                              "default": rc.CONTAINER_DEFAULT_LIMITS}]


def test_quota_use_is_reported_and_the_example_pod_fits():
    used = {"pods": "3", "requests.cpu": "300m", "requests.memory": "384Mi", "limits.memory": "768Mi",
            "requests.nvidia.com/gpu": "0"}
    finding = preflight.describe_quota(rc.NAMESPACE_QUOTA, used, True, *DEFAULTS)
    assert not isinstance(finding, preflight.Attention)
    gpus = rc.NAMESPACE_QUOTA["requests.nvidia.com/gpu"]
    assert finding == (f"ResourceQuota {rc.QUOTA_NAME}: pods 3/20, requests.cpu 300m/8, requests.memory 384Mi/16Gi, "
                       f"requests.nvidia.com/gpu 0/{gpus}, limits.memory 768Mi/32Gi; remote_kpo's pod fits ({NEEDS})")


def test_a_full_quota_fails_naming_the_quota_and_what_is_short():
    used = {"pods": "20", "requests.cpu": "7950m", "requests.memory": "1Gi", "limits.memory": "2Gi"}
    with pytest.raises(preflight.PreflightError) as err:
        preflight.describe_quota(rc.NAMESPACE_QUOTA, used, True, *DEFAULTS)
    message = str(err.value)
    assert message.startswith(f"remote_kpo's pod does not fit in ResourceQuota {rc.QUOTA_NAME} "
                              "(pods 20/20, requests.cpu 7950m/8,")
    cpu = "101m" if rc.XCOM_ENABLED else "100m"
    assert f"it needs pods 1 with 0 left; requests.cpu {cpu} with 50m left: raise it in k8s/resourcequota.yaml" in message
    assert "memory" not in message.split("it needs")[1].split(":")[0], "only what is short"
    assert "\n" not in message


def test_a_missing_quota_passes_with_a_warning():
    finding = preflight.describe_quota(None, {}, True, *DEFAULTS)
    assert isinstance(finding, preflight.Attention)
    assert f"no ResourceQuota {rc.QUOTA_NAME} in namespace {rc.REMOTE_NAMESPACE}: nothing caps" in finding
    assert "apply k8s/resourcequota.yaml" in finding
    assert isinstance(preflight.describe_quota({}, {}, True, *DEFAULTS), preflight.Attention), "not counted yet"


def test_without_the_limit_range():
    if rc.XCOM_ENABLED and rc.POD_OPERATOR != "native":  # a sidecar without a memory limit: the quota refuses the pod
        with pytest.raises(preflight.PreflightError, match=(
                f"ResourceQuota {rc.QUOTA_NAME} refuses remote_kpo's pod: must specify limits.memory for: "
                f"airflow-xcom-sidecar \\(the defaults come from LimitRange {rc.LIMIT_RANGE_NAME}: it is missing\\): "
                "apply k8s/resource-defaults.yaml")):
            preflight.describe_quota(rc.NAMESPACE_QUOTA, {}, False, {}, {})
    else:  # the example's containers set all they need; other pods without requests would be refused
        finding = preflight.describe_quota(rc.NAMESPACE_QUOTA, {}, False, {}, {})
        assert isinstance(finding, preflight.Attention)
        assert f"LimitRange {rc.LIMIT_RANGE_NAME} is missing: the quota refuses containers" in finding


def test_a_request_above_the_default_limit_is_named(monkeypatch):
    monkeypatch.setattr(rc, "EXAMPLE_POD_LIMITS", {})
    with pytest.raises(preflight.PreflightError, match="base requests memory 128Mi above its limit 64Mi"):
        preflight.describe_quota(rc.NAMESPACE_QUOTA, {}, True, rc.CONTAINER_DEFAULT_REQUESTS, {"memory": "64Mi"})


class FakeCore:
    """Answers the two reads by name, or raises the API server's errors."""

    def __init__(self, quota: tuple[dict, dict] | None, limit_range: bool = True, status: int | None = None):
        self.quota, self.limit_range, self.status, self.read = quota, limit_range, status, []

    def answer(self, kind: str, name: str, namespace: str, found, value):
        from kubernetes.client.exceptions import ApiException

        self.read.append((kind, name, namespace))
        if self.status:
            raise ApiException(status=self.status, reason="Forbidden")
        if not found:
            raise ApiException(status=404, reason="Not Found")
        return value

    def read_namespaced_resource_quota(self, name, namespace, _request_timeout):
        assert _request_timeout == preflight.API_TIMEOUT
        hard, used = self.quota or ({}, {})
        return self.answer("resourcequotas", name, namespace, self.quota,
                           SimpleNamespace(status=SimpleNamespace(hard=hard, used=used)))

    def read_namespaced_limit_range(self, name, namespace, _request_timeout):
        assert _request_timeout == preflight.API_TIMEOUT
        item = SimpleNamespace(type="Container", default=dict(rc.CONTAINER_DEFAULT_LIMITS),
                               default_request=dict(rc.CONTAINER_DEFAULT_REQUESTS))
        return self.answer("limitranges", name, namespace, self.limit_range, SimpleNamespace(spec=SimpleNamespace(limits=[item])))


def with_core(monkeypatch, core: FakeCore) -> FakeCore:
    import kubernetes.client

    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda api_client: core)
    return core


def test_check_quota_reads_both_objects_by_name(monkeypatch):
    core = with_core(monkeypatch, FakeCore((rc.NAMESPACE_QUOTA, {"pods": "0"})))
    assert f"remote_kpo's pod fits ({NEEDS})" in preflight.check_quota(api_client=None)
    assert core.read == [("resourcequotas", rc.QUOTA_NAME, rc.REMOTE_NAMESPACE),
                         ("limitranges", rc.LIMIT_RANGE_NAME, rc.REMOTE_NAMESPACE)]


def test_check_quota_names_the_missing_permission(monkeypatch):
    with_core(monkeypatch, FakeCore((rc.NAMESPACE_QUOTA, {}), status=403))
    with pytest.raises(preflight.PreflightError, match=f"may not get resourcequotas/{rc.QUOTA_NAME} in namespace "
                                                       f"{rc.REMOTE_NAMESPACE}: .*kubectl apply -f k8s/"):
        preflight.check_quota(api_client=None)


def test_check_quota_without_the_objects_warns(monkeypatch):
    with_core(monkeypatch, FakeCore(None, limit_range=False))
    finding = preflight.check_quota(api_client=None)
    assert isinstance(finding, preflight.Attention) and f"no ResourceQuota {rc.QUOTA_NAME}" in finding


@pytest.mark.skipif(not rc.XCOM_ENABLED or rc.POD_OPERATOR == "native",
                    reason="only the XCom path has a sidecar; the native operator's are XCOM_SIDECAR_RESOURCES")
def test_the_sidecar_resources_of_the_connection_count(monkeypatch):
    """The operator gives the sidecar the connection's xcom_sidecar_container_resources if set."""
    with_core(monkeypatch, FakeCore((rc.NAMESPACE_QUOTA, {})))
    own = {"xcom_sidecar_container_resources": json.dumps({"requests": {"cpu": "1m", "memory": "10Mi"},
                                                           "limits": {"memory": "32Mi"}})}
    assert "limits.memory 288Mi)" in preflight.check_quota(api_client=None, extra=own)
    assert "limits.memory 512Mi)" in preflight.check_quota(api_client=None, extra={}), "else the LimitRange's default"
