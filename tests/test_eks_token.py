"""The rendered EKS exec plugin, run for real: fake credentials, and a local STS stand-in.

No AWS is reachable here: the STS double of tests/kube_api_double answers AssumeRole under the
rendered trust policy; botocore, the plugin and the presigning are real. The token is then
verified the way EKS does (signature, cluster name, access entry).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import AWS_CASES
from kube_api_double.auth import AwsCredential, EksAuthenticator
from kube_api_double.sts import StsDouble


@pytest.fixture
def sts_for(render):
    """The STS double (tests/kube_api_double/sts.py) enforcing the project's own trust policy."""
    servers = []

    def make(project):
        trust = json.loads((project.path / "aws/trust-policy.json").read_text())
        entry = json.loads((project.path / "aws/access-entry.json").read_text())
        eks = EksAuthenticator(project.answers["cluster_name"], project.answers["aws_region"],
                               access_entries={entry["principalArn"]: entry["kubernetesGroups"]})
        caller = trust["Statement"][0]["Principal"]["AWS"]
        eks.credentials[BASE_ENV["AWS_ACCESS_KEY_ID"]] = AwsCredential(BASE_ENV["AWS_SECRET_ACCESS_KEY"], caller)
        sts = StsDouble(eks, trust, entry["principalArn"], {BASE_ENV["AWS_ACCESS_KEY_ID"]: caller}).start()
        servers.append(sts)
        return sts, eks

    yield make
    for server in servers:
        server.stop()


def plugin_args(project) -> list[str]:
    import yaml

    settings = yaml.safe_load((project.path / "airflow_settings.yaml").read_text())["airflow"]
    plugin = settings["connections"][0]["conn_extra"]["kube_config"]["users"][0]["user"]["exec"]
    assert plugin["command"] == "python"
    return [arg.replace("/usr/local/airflow", str(project.path)) for arg in plugin["args"]]


def decode(token: str) -> dict:
    assert token.startswith("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(token[len("k8s-aws-v1."):] + "==").decode()
    parsed = urlparse(url)
    return {"host": parsed.netloc, **{k: v[0] for k, v in parse_qs(parsed.query).items()}}


BASE_ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLECALLER01", "AWS_SECRET_ACCESS_KEY": "secret", "PATH": "/usr/bin:/bin",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "KUBERNETES_EXEC_INFO": json.dumps({"apiVersion": "client.authentication.k8s.io/v1"})}


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Each test's own HOME: the plugin's token cache (~/.kube/cache/kpo-eks) stays inside it."""
    monkeypatch.setitem(BASE_ENV, "HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("answers", AWS_CASES)
def test_plugin_assumes_the_runner_role_with_external_id(render, sts_for, answers):
    project = render(answers)
    sts, eks = sts_for(project)
    args = plugin_args(project)
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          env=BASE_ENV | {"AWS_ENDPOINT_URL_STS": sts.url})
    assert done.returncode == 0, done.stderr
    (call,) = sts.calls
    assert call["RoleArn"] == args[args.index("--role-arn") + 1]
    assert call["ExternalId"] == args[args.index("--external-id") + 1]
    credential = json.loads(done.stdout)
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    token = credential["status"]["token"]
    query = decode(token)
    assert query["host"] == f"sts.{project.answers['aws_region']}.amazonaws.com", "presigned for the public endpoint"
    assert query["X-Amz-Credential"].startswith("ASIA"), "signed as the assumed role"
    # Verified as EKS would: signature, cluster name, access entry -> the Role's group.
    identity = eks.authenticate(token)
    assert identity.username.startswith(f"arn:aws:sts::{project.answers['aws_account_id']}:assumed-role/")
    assert "airflow-kpo-runners" in identity.groups


@pytest.mark.parametrize("answers", AWS_CASES)
def test_trust_policy_refuses_a_wrong_external_id(render, sts_for, answers):
    project = render(answers)
    sts, _ = sts_for(project)
    args = plugin_args(project)
    args[args.index("--external-id") + 1] = "guessed"
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          env=BASE_ENV | {"AWS_ENDPOINT_URL_STS": sts.url})
    assert done.returncode == 1 and "AccessDenied" in done.stderr


@pytest.mark.parametrize("answers", AWS_CASES)
def test_plugin_uses_own_identity_when_role_is_blank(render, answers):
    project = render(answers)
    done = subprocess.run([sys.executable, *plugin_args(project)], capture_output=True, text=True, timeout=60,
                          env=BASE_ENV | {"KPO_EKS_ROLE_ARN": ""})
    assert done.returncode == 0, done.stderr
    token = decode(json.loads(done.stdout)["status"]["token"])
    assert token["host"] == f"sts.{project.answers['aws_region']}.amazonaws.com", "EKS needs the regional endpoint"
    assert token["X-Amz-Credential"].startswith("AKIAEXAMPLECALLER01/")


def test_plugin_failure_is_one_line(render):
    project = render({"cloud": "aws", "xcom": True})
    env = {k: v for k, v in BASE_ENV.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    done = subprocess.run([sys.executable, *plugin_args(project)], capture_output=True, text=True, timeout=60,
                          env=env | {"KPO_EKS_ROLE_ARN": "", "AWS_EC2_METADATA_DISABLED": "true"})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("eks_token: cannot make a token for") and done.stderr.count("\n") == 1
