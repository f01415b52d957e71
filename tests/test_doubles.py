"""The test doubles can say no: every rule they enforce refuses what it must.

The end-to-end tests trust tests/kube_api_double to stand in for EKS, STS, the EKS control plane
and a Kubernetes API server. A double that accepted everything would let those tests pass for
the wrong reason, so each rule is shown refusing here, through the doubles' real interfaces:
HTTPS to a started ApiDouble verified with its CA data, and botocore clients with fake
credentials against the STS and EKS doubles. Tokens are made by the rendered project's own
EKS exec plugin (botocore's SigV4 presigner). Every refusal has a positive control next to it,
so a negative test cannot pass because something unrelated is broken, and each negative test
also checks the reason the double gives, so it fails if that rule is switched off.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import time

import boto3
import botocore.auth
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from kube_api_double import ApiDouble
from kube_api_double.auth import EKS_TOKEN_MAX_AGE, AwsCredential, EksAuthenticator, ServiceAccountTokens
from kube_api_double.client import call
from kube_api_double.eks import EksDouble
from kube_api_double.sts import StsDouble

AWS = {"cloud": "aws", "xcom": False}
AWS_NATIVE_GPU = {"cloud": "aws", "xcom": False, "pod_operator": "native", "gpu_node_group": True}
GENERIC = {"cloud": "generic", "xcom": False}

# Fake credentials: the runner role's session (what STS AssumeRole hands out), a session of a
# role without an access entry, and the Astro workload identity / an outsider calling STS.
RUNNER_KEY, RUNNER_SECRET, RUNNER_SESSION_TOKEN = "ASIARUNNERSESSION001", "runner-secret", "runner-session-token"
STRAY_KEY, STRAY_SECRET, STRAY_SESSION_TOKEN = "ASIASTRAYSESSION0001", "stray-secret", "stray-session-token"
ASTRO_KEY, ASTRO_SECRET = "AKIAASTROWORKLOAD001", "astro-workload-secret"
OTHER_ROLE_KEY = "ASIAOTHERROLESESS001"
OUTSIDER_KEY, OUTSIDER_SECRET = "AKIAOUTSIDERCALLER01", "outsider-secret"
NO_RETRIES = Config(retries={"total_max_attempts": 1})


# -- helpers -------------------------------------------------------------------------------------
def load_json(project, name: str) -> dict:
    return json.loads((project.path / "aws" / name).read_text())


def manifest(project, name: str) -> dict:
    return yaml.safe_load((project.path / "k8s" / f"{name}.yaml").read_text())




def who_am_i(double: ApiDouble, token: str) -> tuple[int, dict]:
    """SelfSubjectReview: needs authentication only, so a refusal here is authentication's."""
    return call(double, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token,
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})


def refused_because(double: ApiDouble, reason: str) -> str:
    """The reason the double recorded for the last request's 401 must name the rule under test."""
    # The last 401, not the last entry: a 200 is recorded after its answer and can land later.
    refused = [r for r in double.requests if r["status"] == 401]
    assert refused, double.requests[-3:]
    last = refused[-1]
    assert reason in last["reason"], f"refused, but for another reason: {last['reason']!r}"
    return last["reason"]


def session(key: str, secret: str, token: str | None = None, region: str = "us-east-1") -> boto3.Session:
    return boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token, region_name=region)


def aws_error(call_) -> dict:
    with pytest.raises(ClientError) as err:
        call_()
    return err.value.response["Error"]


# -- EKS tokens ----------------------------------------------------------------------------------
@pytest.fixture
def eks_plugin(render):
    """The rendered include/kube_auth/eks_token.py, imported: its presigned_token makes the tokens."""
    project = render(AWS)
    spec = importlib.util.spec_from_file_location("rendered_eks_token", project.path / "include/kube_auth/eks_token.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def eks_cluster(render):
    """An ApiDouble authenticating EKS tokens for the rendered cluster, its access entry and RBAC."""
    project = render(AWS)
    entry = load_json(project, "access-entry.json")
    account, role = entry["principalArn"].split(":")[4], entry["principalArn"].split("/")[-1]
    auth = EksAuthenticator(project.answers["cluster_name"], project.answers["aws_region"],
                            access_entries={entry["principalArn"]: entry["kubernetesGroups"]})
    auth.credentials[RUNNER_KEY] = AwsCredential(RUNNER_SECRET, f"arn:aws:sts::{account}:assumed-role/{role}/airflow-remote-kpo",
                                                 session_token=RUNNER_SESSION_TOKEN)
    auth.credentials[STRAY_KEY] = AwsCredential(STRAY_SECRET, f"arn:aws:sts::{account}:assumed-role/some-other-role/s1",
                                                session_token=STRAY_SESSION_TOKEN)
    with ApiDouble(project.answers["namespace"], [manifest(project, "role")], [manifest(project, "rolebinding")],
                   eks=auth) as double:
        yield project, double


def runner_token(eks_plugin, project, *, cluster: str | None = None, region: str | None = None,
                 secret: str = RUNNER_SECRET) -> str:
    region = region or project.answers["aws_region"]
    creds = session(RUNNER_KEY, secret, RUNNER_SESSION_TOKEN, region)
    return eks_plugin.presigned_token(creds, cluster or project.answers["cluster_name"], region)


def test_eks_token_positive_control_authenticates_and_maps_the_access_entry(eks_plugin, eks_cluster):
    project, double = eks_cluster
    code, review = who_am_i(double, runner_token(eks_plugin, project))
    assert code == 201, review
    user = review["status"]["userInfo"]
    assert user["username"].endswith(":assumed-role/remote-kpo-kpo-runner/airflow-remote-kpo")
    assert "airflow-kpo-runners" in user["groups"]
    code, pods = call(double, "GET", f"/api/v1/namespaces/{project.answers['namespace']}/pods",
                      runner_token(eks_plugin, project))
    assert code == 200 and pods["kind"] == "PodList"


def test_eks_token_signed_with_the_wrong_secret_key_is_401(eks_plugin, eks_cluster):
    project, double = eks_cluster
    code, status = who_am_i(double, runner_token(eks_plugin, project, secret="not-the-" + RUNNER_SECRET))
    assert (code, status.get("reason")) == (401, "Unauthorized")
    refused_because(double, "signature does not match")


def test_eks_token_for_another_cluster_is_401(eks_plugin, eks_cluster):
    """The cluster name is only in the signed x-k8s-aws-id header: the signature must not verify."""
    project, double = eks_cluster
    code, _ = who_am_i(double, runner_token(eks_plugin, project, cluster="another-cluster"))
    assert code == 401
    refused_because(double, "signature does not match")


def test_eks_token_without_a_signed_cluster_header_is_401(eks_plugin, eks_cluster, monkeypatch):
    project, double = eks_cluster
    monkeypatch.setattr(eks_plugin, "CLUSTER_ID_HEADER", "x-k8s-aws-not-the-id")
    code, _ = who_am_i(double, runner_token(eks_plugin, project))
    assert code == 401
    refused_because(double, "x-k8s-aws-id is not signed")


def test_eks_token_presigned_for_another_regions_sts_is_401(eks_plugin, eks_cluster):
    project, double = eks_cluster
    assert project.answers["aws_region"] != "eu-west-1"
    token = runner_token(eks_plugin, project, region="eu-west-1")  # sts.eu-west-1.amazonaws.com, validly signed
    code, _ = who_am_i(double, token)
    assert code == 401
    refused_because(double, "regional STS endpoint")


def test_eks_token_presigned_for_the_global_sts_endpoint_is_401(eks_plugin, eks_cluster, monkeypatch):
    project, double = eks_cluster
    monkeypatch.setattr(eks_plugin, "sts_url", lambda region: "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15")
    token = runner_token(eks_plugin, project)  # signed for us-east-1, the global endpoint's region
    assert "sts.amazonaws.com" in base64.urlsafe_b64decode(token[len("k8s-aws-v1."):] + "==").decode()
    code, _ = who_am_i(double, token)
    assert code == 401
    refused_because(double, "regional STS endpoint")


def signed_ago(monkeypatch, seconds: float) -> None:
    """botocore's SigV4 clock, set back: X-Amz-Date is then that many seconds in the past."""
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda remove_tzinfo=True: real(remove_tzinfo) - dt.timedelta(seconds=seconds))


def test_eks_token_just_under_the_max_age_still_authenticates(eks_plugin, eks_cluster, monkeypatch):
    project, double = eks_cluster
    signed_ago(monkeypatch, EKS_TOKEN_MAX_AGE - 60)
    code, review = who_am_i(double, runner_token(eks_plugin, project))
    assert code == 201, review


def test_eks_token_older_than_the_max_age_is_401(eks_plugin, eks_cluster, monkeypatch):
    project, double = eks_cluster
    assert EKS_TOKEN_MAX_AGE == 15 * 60
    signed_ago(monkeypatch, EKS_TOKEN_MAX_AGE + 60)
    code, _ = who_am_i(double, runner_token(eks_plugin, project))
    assert code == 401
    refused_because(double, "token expired")


def test_eks_token_of_a_role_without_an_access_entry_is_401(eks_plugin, eks_cluster):
    project, double = eks_cluster
    region = project.answers["aws_region"]
    token = eks_plugin.presigned_token(session(STRAY_KEY, STRAY_SECRET, STRAY_SESSION_TOKEN, region),
                                       project.answers["cluster_name"], region)
    code, _ = who_am_i(double, token)
    assert code == 401
    refused_because(double, "no access entry for arn:aws:iam::123456789012:role/some-other-role")


def test_eks_token_with_an_unknown_access_key_is_401(eks_plugin, eks_cluster):
    project, double = eks_cluster
    region = project.answers["aws_region"]
    token = eks_plugin.presigned_token(session("ASIAUNKNOWNKEY000001", RUNNER_SECRET, RUNNER_SESSION_TOKEN, region),
                                       project.answers["cluster_name"], region)
    code, _ = who_am_i(double, token)
    assert code == 401
    refused_because(double, "security token included in the request is invalid")


@pytest.mark.parametrize("ended", [False, True], ids=["session-running-control", "session-ended"])
def test_eks_token_signed_by_a_session_that_has_ended_is_401(eks_plugin, eks_cluster, ended):
    """A token dies with the session that signed it, however young the token is."""
    project, double = eks_cluster
    double.eks.credentials[RUNNER_KEY].expires = time.time() + (-1 if ended else 60)
    code, _ = who_am_i(double, runner_token(eks_plugin, project))
    if not ended:
        assert code == 201
        return
    assert code == 401
    refused_because(double, "security token included in the request is expired")


# -- ServiceAccount JWTs -------------------------------------------------------------------------
@pytest.fixture
def sa_cluster(render):
    """An ApiDouble with the rendered generic project's Role and RoleBinding (a ServiceAccount subject)."""
    project = render(GENERIC)
    with ApiDouble(project.answers["namespace"], [manifest(project, "role")], [manifest(project, "rolebinding")]) as double:
        yield project, double


def bound_account(project) -> tuple[str, str]:
    (subject,) = manifest(project, "rolebinding")["subjects"]
    assert subject["kind"] == "ServiceAccount"
    return subject["namespace"], subject["name"]


def test_sa_token_positive_control_authenticates(sa_cluster):
    project, double = sa_cluster
    namespace, name = bound_account(project)
    code, review = who_am_i(double, double.sa_tokens.mint(namespace, name, ttl=600))
    assert code == 201, review
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{name}"


def test_sa_token_signed_with_another_key_is_401(sa_cluster):
    project, double = sa_cluster
    forged = ServiceAccountTokens().mint(*bound_account(project), ttl=600)  # same claims, another key
    code, status = who_am_i(double, forged)
    assert (code, status.get("reason")) == (401, "Unauthorized")
    refused_because(double, "bad ServiceAccount token signature")


def test_sa_token_with_tampered_claims_is_401(sa_cluster):
    """A genuine token of an unbound account, its subject rewritten to the bound one, signature kept."""
    project, double = sa_cluster
    namespace, name = bound_account(project)
    header, claims, signature = double.sa_tokens.mint(namespace, "nobody", ttl=600).split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    body["sub"] = f"system:serviceaccount:{namespace}:{name}"
    tampered = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    code, _ = who_am_i(double, f"{header}.{tampered}.{signature}")
    assert code == 401
    refused_because(double, "bad ServiceAccount token signature")


def test_sa_token_expired_is_401(sa_cluster):
    project, double = sa_cluster
    expired = double.sa_tokens.mint(*bound_account(project), ttl=-60)  # genuine signature, exp a minute ago
    code, _ = who_am_i(double, expired)
    assert code == 401
    refused_because(double, "ServiceAccount token expired")


# -- RBAC ----------------------------------------------------------------------------------------
def test_rbac_positive_control_bound_account_lists_pods_and_events(sa_cluster):
    project, double = sa_cluster
    namespace, name = bound_account(project)
    token = double.sa_tokens.mint(namespace, name, ttl=600)
    assert call(double, "GET", f"/api/v1/namespaces/{namespace}/pods", token)[0] == 200
    assert call(double, "GET", f"/api/v1/namespaces/{namespace}/events", token)[0] == 200


def test_rbac_authenticated_account_not_in_the_rolebinding_is_403(sa_cluster):
    project, double = sa_cluster
    namespace, _ = bound_account(project)
    token = double.sa_tokens.mint(namespace, "not-bound", ttl=600)
    assert who_am_i(double, token)[0] == 201, "authenticated"
    code, status = call(double, "GET", f"/api/v1/namespaces/{namespace}/pods", token)
    assert (code, status.get("reason")) == (403, "Forbidden")
    assert 'User "system:serviceaccount:airflow-jobs:not-bound" cannot list resource "pods"' in status["message"]


def test_rbac_eks_identity_in_a_group_not_in_the_rolebinding_is_403(eks_plugin, eks_cluster):
    """Authenticated through an access entry, but into another Kubernetes group."""
    project, double = eks_cluster
    region = project.answers["aws_region"]
    double.eks.access_entries["arn:aws:iam::123456789012:role/some-other-role"] = ["viewers"]
    token = eks_plugin.presigned_token(session(STRAY_KEY, STRAY_SECRET, STRAY_SESSION_TOKEN, region),
                                       project.answers["cluster_name"], region)
    assert who_am_i(double, token)[0] == 201, "authenticated"
    code, status = call(double, "GET", f"/api/v1/namespaces/{project.answers['namespace']}/pods", token)
    assert (code, status.get("reason")) == (403, "Forbidden")
    assert 'cannot list resource "pods"' in status["message"], status


def test_rbac_verb_not_in_the_role_is_403(sa_cluster):
    """The Role grants events list only: creating an event is refused."""
    project, double = sa_cluster
    namespace, name = bound_account(project)
    assert not any(r["resources"] == ["events"] and "create" in r["verbs"] for r in manifest(project, "role")["rules"])
    token = double.sa_tokens.mint(namespace, name, ttl=600)
    code, status = call(double, "POST", f"/api/v1/namespaces/{namespace}/events", token,
                        {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x"}})
    assert (code, status.get("reason")) == (403, "Forbidden")
    assert 'cannot create resource "events"' in status["message"]


@pytest.mark.parametrize("path, refusal", [
    # Without xcom the Role has no pods/exec: an exec upgrade is refused before any pod lookup.
    ("/api/v1/namespaces/{namespace}/pods/some-pod/exec?command=ls", 'cannot get resource "pods/exec"'),
    ("/api/v1/namespaces/default/pods", 'in the namespace "default"'),
], ids=["subresource-not-in-the-role", "another-namespace"])
def test_rbac_outside_the_role_is_403(sa_cluster, path, refusal):
    project, double = sa_cluster
    namespace, name = bound_account(project)
    token = double.sa_tokens.mint(namespace, name, ttl=600)
    code, status = call(double, "GET", path.format(namespace=namespace), token)
    assert (code, status.get("reason")) == (403, "Forbidden")
    assert refusal in status["message"]


# -- STS AssumeRole under the rendered trust policy ----------------------------------------------
@pytest.fixture
def sts(render):
    project = render(AWS)
    trust = load_json(project, "trust-policy.json")
    entry = load_json(project, "access-entry.json")
    auth = EksAuthenticator(project.answers["cluster_name"], project.answers["aws_region"],
                            access_entries={entry["principalArn"]: entry["kubernetesGroups"]})
    trusted = trust["Statement"][0]["Principal"]["AWS"]
    callers = {ASTRO_KEY: trusted, OUTSIDER_KEY: "arn:aws:iam::999988887777:role/outsider"}
    double = StsDouble(auth, trust, entry["principalArn"], callers).start()
    external_id = trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]
    yield project, double, entry["principalArn"], external_id
    double.stop()


def sts_client(double: StsDouble, key: str, secret: str, token: str | None = None):
    return session(key, secret, token).client("sts", endpoint_url=double.url, config=NO_RETRIES)


def test_sts_positive_control_trusted_caller_with_external_id_gets_a_session(sts):
    _, double, role_arn, external_id = sts
    creds = sts_client(double, ASTRO_KEY, ASTRO_SECRET).assume_role(
        RoleArn=role_arn, RoleSessionName="airflow-remote-kpo", ExternalId=external_id)["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    who = sts_client(double, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]).get_caller_identity()
    assert who["Arn"] == "arn:aws:sts::123456789012:assumed-role/remote-kpo-kpo-runner/airflow-remote-kpo"


def test_sts_caller_outside_the_trust_policy_is_access_denied(sts):
    _, double, role_arn, external_id = sts
    error = aws_error(lambda: sts_client(double, OUTSIDER_KEY, OUTSIDER_SECRET).assume_role(
        RoleArn=role_arn, RoleSessionName="airflow-remote-kpo", ExternalId=external_id))
    assert error["Code"] == "AccessDenied" and "is not trusted by" in error["Message"]
    assert double.eks.credentials == {}, "no session was handed out"


def test_sts_wrong_external_id_is_access_denied(sts):
    _, double, role_arn, external_id = sts
    error = aws_error(lambda: sts_client(double, ASTRO_KEY, ASTRO_SECRET).assume_role(
        RoleArn=role_arn, RoleSessionName="airflow-remote-kpo", ExternalId=external_id + "-guessed"))
    assert error["Code"] == "AccessDenied" and "ExternalId" in error["Message"]
    assert double.eks.credentials == {}


def test_sts_missing_external_id_is_access_denied(sts):
    _, double, role_arn, _ = sts
    error = aws_error(lambda: sts_client(double, ASTRO_KEY, ASTRO_SECRET).assume_role(
        RoleArn=role_arn, RoleSessionName="airflow-remote-kpo"))
    assert error["Code"] == "AccessDenied" and "ExternalId" in error["Message"]


def test_sts_assume_role_on_another_role_arn_is_refused(sts):
    _, double, role_arn, external_id = sts
    other = role_arn.rsplit("/", 1)[0] + "/admin"
    error = aws_error(lambda: sts_client(double, ASTRO_KEY, ASTRO_SECRET).assume_role(
        RoleArn=other, RoleSessionName="airflow-remote-kpo", ExternalId=external_id))
    assert error["Code"] == "AccessDenied" and "not the runner role" in error["Message"]
    assert double.eks.credentials == {}


def assume(double: StsDouble, role_arn: str, external_id: str, **extra) -> dict:
    return sts_client(double, ASTRO_KEY, ASTRO_SECRET).assume_role(
        RoleArn=role_arn, RoleSessionName="airflow-remote-kpo", ExternalId=external_id, **extra)["Credentials"]


@pytest.mark.parametrize("seconds", [900, 3600, 3601])  # botocore itself refuses under 900
def test_sts_session_lasts_duration_seconds_within_the_roles_limits(sts, seconds):
    _, double, role_arn, external_id = sts
    if seconds == 3601:
        error = aws_error(lambda: assume(double, role_arn, external_id, DurationSeconds=seconds))
        assert error["Code"] == "ValidationError" and "outside 900-3600" in error["Message"]
        assert double.eks.credentials == {}
        return
    creds = assume(double, role_arn, external_id, DurationSeconds=seconds)
    assert abs(creds["Expiration"].timestamp() - (time.time() + seconds)) < 5
    assert abs(double.eks.credentials[creds["AccessKeyId"]].expires - creds["Expiration"].timestamp()) < 1


@pytest.mark.parametrize("ended", [False, True], ids=["session-running-control", "session-ended"])
def test_sts_get_caller_identity_of_an_ended_session_is_expired_token(sts, ended):
    _, double, role_arn, external_id = sts
    creds = assume(double, role_arn, external_id)
    if ended:
        double.eks.credentials[creds["AccessKeyId"]].expires = time.time() - 1
    client = sts_client(double, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    if not ended:
        assert client.get_caller_identity()["Arn"].endswith(":assumed-role/remote-kpo-kpo-runner/airflow-remote-kpo")
        return
    error = aws_error(client.get_caller_identity)
    assert error["Code"] == "ExpiredToken" and "expired" in error["Message"]


# -- EKS control-plane API under the rendered runner policy --------------------------------------
@pytest.fixture
def eks_api(render):
    project = render(AWS_NATIVE_GPU)
    policy = load_json(project, "runner-policy.json")
    entry = load_json(project, "access-entry.json")
    account, role = project.answers["aws_account_id"], entry["principalArn"].split("/")[-1]
    auth = EksAuthenticator(project.answers["cluster_name"], project.answers["aws_region"])
    auth.credentials[RUNNER_KEY] = AwsCredential(RUNNER_SECRET, f"arn:aws:sts::{account}:assumed-role/{role}/airflow",
                                                 session_token=RUNNER_SESSION_TOKEN)
    auth.credentials[ASTRO_KEY] = AwsCredential(ASTRO_SECRET, project.answers["aws_astro_workload_identity_arn"])
    auth.credentials[OTHER_ROLE_KEY] = AwsCredential(RUNNER_SECRET, f"arn:aws:sts::{account}:assumed-role/other-role/airflow",
                                                     session_token=RUNNER_SESSION_TOKEN)
    double = EksDouble(auth, policy, role_arn=entry["principalArn"], account=account, endpoint="https://127.0.0.1:1",
                       ca_data="", polls_to_active=1).start()
    remote_cluster = project.path / "include" / "remote_cluster.py"
    spec = importlib.util.spec_from_file_location("rendered_remote_cluster_gpu", remote_cluster)
    rc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rc)
    yield rc, double
    double.stop()


def eks_client(double: EksDouble, key: str = RUNNER_KEY, secret: str = RUNNER_SECRET, token: str | None = RUNNER_SESSION_TOKEN):
    return session(key, secret, token).client("eks", endpoint_url=double.url, config=NO_RETRIES)


def nodegroup_request(rc, **override) -> dict:
    return {"clusterName": rc.CLUSTER_NAME, "nodegroupName": rc.GPU_NODE_GROUP_NAME, "nodeRole": rc.GPU_NODE_ROLE_ARN,
            "subnets": ["subnet-0aaa"], "instanceTypes": ["g5.xlarge"], "amiType": "AL2023_x86_64_NVIDIA",
            "scalingConfig": {"minSize": 1, "maxSize": 1, "desiredSize": 1}} | override


def test_eks_api_positive_control_runner_policy_allows_the_dags_calls(eks_api):
    rc, double = eks_api
    client = eks_client(double)
    assert client.describe_cluster(name=rc.CLUSTER_NAME)["cluster"]["status"] == "ACTIVE"
    assert client.create_nodegroup(**nodegroup_request(rc))["nodegroup"]["status"] == "CREATING"
    assert client.describe_nodegroup(clusterName=rc.CLUSTER_NAME, nodegroupName=rc.GPU_NODE_GROUP_NAME)[
        "nodegroup"]["status"] == "ACTIVE"
    assert client.delete_nodegroup(clusterName=rc.CLUSTER_NAME, nodegroupName=rc.GPU_NODE_GROUP_NAME)[
        "nodegroup"]["status"] == "DELETING"


def test_eks_api_describe_another_cluster_is_access_denied(eks_api):
    """The policy names one cluster ARN; IAM refuses before existence is known (a 403, not a 404)."""
    _, double = eks_api
    error = aws_error(lambda: eks_client(double).describe_cluster(name="another-cluster"))
    assert error["Code"] == "AccessDeniedException"
    assert "eks:DescribeCluster on resource: arn:aws:eks:us-east-1:123456789012:cluster/another-cluster" in error["Message"]


def test_eks_api_node_group_outside_the_allowed_prefix_is_access_denied(eks_api):
    rc, double = eks_api
    client = eks_client(double)
    assert not "someone-elses-nodes".startswith("airflow-gpu-")
    for operation in (client.describe_nodegroup, client.delete_nodegroup):
        error = aws_error(lambda op=operation: op(clusterName=rc.CLUSTER_NAME, nodegroupName="someone-elses-nodes"))
        assert error["Code"] == "AccessDeniedException", operation
        assert "nodegroup/gpu-cluster/someone-elses-nodes/" in error["Message"]


def test_eks_api_create_node_group_without_pass_role_on_its_node_role_is_access_denied(eks_api):
    rc, double = eks_api
    admin = rc.GPU_NODE_ROLE_ARN.rsplit("/", 1)[0] + "/admin"
    error = aws_error(lambda: eks_client(double).create_nodegroup(**nodegroup_request(rc, nodeRole=admin)))
    assert error["Code"] == "AccessDeniedException" and f"iam:PassRole on resource: {admin}" in error["Message"]
    assert double.nodegroups == {}, "nothing was created"


def test_eks_api_caller_that_is_not_a_role_session_is_access_denied(eks_api):
    rc, double = eks_api
    error = aws_error(lambda: eks_client(double, ASTRO_KEY, ASTRO_SECRET, None).describe_cluster(name=rc.CLUSTER_NAME))
    assert error["Code"] == "AccessDeniedException" and "not signed by a session of the runner role" in error["Message"]


def test_eks_api_session_of_another_role_is_access_denied(eks_api):
    """The runner policy is the runner role's: another role's session is not granted it."""
    rc, double = eks_api
    error = aws_error(lambda: eks_client(double, OTHER_ROLE_KEY).describe_cluster(name=rc.CLUSTER_NAME))
    assert error["Code"] == "AccessDeniedException" and "not signed by a session of the runner role" in error["Message"]


@pytest.mark.parametrize("kind", ["kube-api", "google-token"])
def test_a_client_silent_before_its_tls_handshake_stalls_only_itself(kind):
    """A real API server handshakes each connection on its own. Here one client connects and sends
    nothing (a triggerer whose asyncio loop is busy, a process starved of CPU); another client must
    still get its answer at once. When the doubles wrapped the listening socket, the handshake ran
    inside accept() in the one serving thread and the second request timed out: in a DAG run whose
    kube clients have no read timeout, that was a hang."""
    import socket
    import ssl
    import urllib.error
    import urllib.request

    from kube_api_double.google import GoogleTokenDouble

    double = (ApiDouble("ns", [], []) if kind == "kube-api" else GoogleTokenDouble()).start()
    try:
        port = double.httpd.server_port
        with socket.create_connection(("127.0.0.1", port)) as silent:
            assert silent.getpeername()[1] == port  # connected, and never says a word
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            started = time.monotonic()
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/version", context=context, timeout=5).close()
            except urllib.error.HTTPError as answer:  # any answer of the double's (401, 404) will do
                answer.close()
            assert time.monotonic() - started < 5
    finally:
        double.stop()
