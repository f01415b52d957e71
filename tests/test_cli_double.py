"""The recording CLI stand-in (tests/cloud_cli_double) says no where the real CLIs would.

tests/test_setup_scripts.py trusts it to refuse calls it does not model, to answer
`kubectl auth can-i` from the RBAC actually applied, to report missing resources, to fail as
the real CLIs do when nobody is signed in, the sign-in expired or a read is not allowed, to
refuse an AssumeRole the trust policy does not allow, and to hide tools that are "not
installed"; each rule is shown here refusing, next to a positive control.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml
from cloud_cli_double import CliDouble

ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "runner", "namespace": "jobs"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get"]}]}
BINDING = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": "runner", "namespace": "jobs"},
           "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "runners"}],
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runner"}}


AWS_LOGIN = {"Account": "210987654321", "Arn": "arn:aws:sts::210987654321:assumed-role/Dev/jane", "UserId": "AROAX:jane"}
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:role/team/Dev"}, "Action": "sts:AssumeRole",
    "Condition": {"StringEquals": {"sts:ExternalId": "x-remote-kpo"}}}]}
GCP_LOGIN = {"account": "jane@corp.example", "project": "ml-prod"}
AZ_LOGIN = {"user": {"name": "jane@corp.example", "type": "user"}, "objectId": "oid-jane", "tenantId": "t-1",
            "subscriptions": ["s-1"]}


@pytest.fixture
def cli(tmp_path):
    double = CliDouble(tmp_path / "double", {
        "aws": {"clusters": {"known": {"region": "eu-west-1", "mode": "API", "endpoint": "https://x.example"}},
                "login": AWS_LOGIN, "roles": {"Dev": {}, "runner": TRUST}, "role_paths": {"Dev": "/team/"}},
        "gcp": {"login": GCP_LOGIN, "projects": ["ml-prod"]},
        "azure": {"login": AZ_LOGIN}})

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, cwd=tmp_path, env=double.env(dict(os.environ)),
                              timeout=60)

    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(yaml.safe_dump_all([ROLE, BINDING]))
    run.apply = lambda: run("kubectl", "apply", "-f", str(manifest))  # type: ignore[attr-defined]
    run.manifest, run.double = manifest, double  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize("argv", [["aws", "s3", "ls"], ["gcloud", "compute", "instances", "list"],
                                  ["az", "vm", "list"], ["kubectl", "get", "secrets"], ["eksctl", "delete", "cluster"]])
def test_a_call_it_does_not_model_fails_with_97(cli, argv):
    done = cli(*argv)
    assert done.returncode == 97 and "is not simulated" in done.stderr, done.stderr


def test_can_i_answers_from_the_applied_rbac(cli):
    can_i = ["kubectl", "auth", "can-i", "--namespace", "jobs", "--as", "arn:aws:sts::1:assumed-role/r/s"]
    before = cli(*can_i[:3], "create", "pods", *can_i[3:], "--as-group", "runners")
    assert before.returncode == 1 and before.stdout.strip() == "no", "nothing applied yet"
    assert cli.apply().returncode == 0
    allowed = cli(*can_i[:3], "create", "pods", *can_i[3:], "--as-group", "runners")
    assert allowed.returncode == 0 and allowed.stdout.strip() == "yes"  # positive control
    for verb, resource, group, namespace in [("delete", "pods", "runners", "jobs"), ("create", "pods", "strangers", "jobs"),
                                             ("create", "pods", "runners", "other")]:
        denied = cli("kubectl", "auth", "can-i", verb, resource, "--namespace", namespace, "--as", "u", "--as-group", group)
        assert denied.returncode == 1 and denied.stdout.strip() == "no", (verb, resource, group, namespace)
    exec_into = cli(*can_i[:3], "create", "pods", "--subresource", "exec", *can_i[3:], "--as-group", "runners")
    assert exec_into.stdout.strip() == "no", "a subresource the Role does not name"


def test_can_i_reads_type_slash_name_as_kubectl_does(cli):
    """kubectl auth can-i reads "pods/log" as the pod named log: only --subresource asks for pods/log."""
    logs = {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}
    cli.manifest.write_text(yaml.safe_dump_all([{**ROLE, "rules": [logs]}, BINDING]))
    assert cli.apply().returncode == 0

    def can_i(*what: str) -> str:
        return cli("kubectl", "auth", "can-i", "get", *what, "--namespace", "jobs", "--as", "u",
                   "--as-group", "runners").stdout.strip()

    assert can_i("pods", "--subresource", "log") == "yes"  # positive control
    assert can_i("pods/log") == "no", "get on the pod named log, which a pods/log rule does not grant"
    assert can_i("pods") == "no"


def test_can_i_on_a_rule_with_resource_names_allows_only_those_names(cli):
    named = {"apiGroups": [""], "resources": ["resourcequotas"], "resourceNames": ["runner"], "verbs": ["get"]}
    cli.manifest.write_text(yaml.safe_dump_all([{**ROLE, "rules": [*ROLE["rules"], named]}, BINDING]))
    assert cli.apply().returncode == 0

    def can_i(resource: str) -> str:
        return cli("kubectl", "auth", "can-i", "get", resource, "--namespace", "jobs", "--as", "u",
                   "--as-group", "runners").stdout.strip()

    assert can_i("resourcequotas/runner") == "yes"  # positive control
    assert can_i("resourcequotas/other") == "no"
    assert can_i("resourcequotas") == "no", "a rule with resourceNames never allows an unnamed request"


def test_diff_reports_a_change_only_until_applied(cli):
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "jobs"}}
    cli.manifest.write_text(yaml.safe_dump(namespace))
    assert cli("kubectl", "diff", "-f", str(cli.manifest)).returncode == 1
    assert cli("kubectl", "apply", "-f", str(cli.manifest)).returncode == 0
    assert cli("kubectl", "diff", "-f", str(cli.manifest)).returncode == 0  # positive control: no drift left


def test_a_missing_cluster_is_not_found(cli):
    found = cli("aws", "eks", "describe-cluster", "--name", "known", "--region", "eu-west-1", "--output", "json")
    assert found.returncode == 0, found.stderr  # positive control
    missing = cli("aws", "eks", "describe-cluster", "--name", "other", "--region", "eu-west-1", "--output", "json")
    assert missing.returncode == 254 and "ResourceNotFoundException" in missing.stderr
    assert [c["changed"] for c in cli.double.calls()] == [False, False], "reads change nothing"


def sign(cli, cloud: str, login: dict | None = None, **side) -> None:
    """Change who is signed in (None: nobody) and what is denied, in the double's state."""
    state = cli.double.state
    state[cloud].pop("login", None)
    if login is not None:
        state[cloud]["login"] = login
    state[cloud].update(side)
    cli.double.state_file.write_text(json.dumps(state))


@pytest.mark.parametrize("cloud, argv, code, text", [
    ("aws", ["aws", "sts", "get-caller-identity"], 253, "Unable to locate credentials"),
    ("gcp", ["gcloud", "projects", "describe", "ml-prod"], 1, "You do not currently have an active account selected."),
    ("azure", ["az", "account", "show"], 1, "Please run 'az login' to setup account."),
])
def test_signed_out_and_expired_fail_as_the_real_clis(cli, cloud, argv, code, text):
    found = cli(*argv)
    assert found.returncode == 0, found.stderr  # positive control: signed in
    sign(cli, cloud, None)
    out = cli(*argv)
    assert out.returncode == code and text in out.stderr, out.stderr
    login = {"aws": AWS_LOGIN, "gcp": GCP_LOGIN, "azure": AZ_LOGIN}[cloud]
    sign(cli, cloud, dict(login, expired=True))
    expired = cli(*argv)
    assert expired.returncode != 0
    assert {"aws": "(ExpiredToken)", "gcp": "Reauthentication failed", "azure": "AADSTS700082"}[cloud] in expired.stderr
    if cloud != "aws":
        assert len(expired.stderr.strip().splitlines()) > 1, "gcloud and az say it over several lines"


def test_who_is_signed_in(cli):
    caller = cli("aws", "sts", "get-caller-identity", "--query", "[Account, Arn]", "--output", "text")
    assert caller.stdout.split() == [AWS_LOGIN["Account"], AWS_LOGIN["Arn"]]
    assert cli("gcloud", "config", "get-value", "account").stdout.strip() == GCP_LOGIN["account"]
    sign(cli, "gcp", None)
    unset = cli("gcloud", "config", "get-value", "account")
    assert unset.returncode == 0 and unset.stdout.strip() == "" and "(unset)" in unset.stderr
    show = cli("az", "account", "show", "--subscription", "s-1", "--query", "[id, tenantId]", "--output", "tsv")
    assert show.stdout.split() == ["s-1", "t-1"]
    other = cli("az", "account", "show", "--subscription", "s-2")
    assert other.returncode == 1 and "Subscription 's-2' not found" in other.stderr
    me = cli("az", "ad", "signed-in-user", "show", "--query", "id", "--output", "tsv")
    assert me.stdout.strip() == "oid-jane"
    assert cli("az", "ad", "sp", "show", "--id", "jane@corp.example").returncode == 1, "a user is no service principal"
    sign(cli, "azure", dict(AZ_LOGIN, user={"name": "app-1", "type": "servicePrincipal"}, objectId="oid-app"))
    assert cli("az", "ad", "sp", "show", "--id", "app-1", "--query", "id", "--output", "tsv").stdout.strip() == "oid-app"
    assert cli("az", "ad", "signed-in-user", "show").returncode == 1, "a service principal has no /me"


@pytest.mark.parametrize("cloud, argv, text", [
    ("aws", ["aws", "iam", "get-role", "--role-name", "runner"], "(AccessDenied) when calling the GetRole operation"),
    ("gcp", ["gcloud", "projects", "get-iam-policy", "ml-prod", "--filter", "bindings.role=r AND bindings.members=m"],
     "does not have permission"),
    ("azure", ["az", "identity", "list", "--subscription", "s-1"], "(AuthorizationFailed)"),
])
def test_a_denied_read_fails_as_not_allowed(cli, cloud, argv, text):
    assert cli(*argv).returncode == 0  # positive control
    sign(cli, cloud, {"aws": AWS_LOGIN, "gcp": GCP_LOGIN, "azure": AZ_LOGIN}[cloud], deny=[" ".join(argv[1:3])])
    denied = cli(*argv)
    assert denied.returncode != 0 and text in denied.stderr, denied.stderr
    assert [c["changed"] for c in cli.double.calls()] == [False, False]


def test_a_project_the_account_cannot_see(cli):
    assert cli("gcloud", "projects", "describe", "ml-prod").stdout.strip() == "ml-prod"
    other = cli("gcloud", "projects", "describe", "ml-dev")
    assert other.returncode == 1 and "(or it may not exist)" in other.stderr


def test_assume_role_follows_the_trust_policy(cli):
    assume = ["aws", "sts", "assume-role", "--role-arn", "arn:aws:iam::210987654321:role/runner",
              "--role-session-name", "s", "--query", "Credentials.Expiration", "--output", "text"]
    allowed = cli(*assume, "--external-id", "x-remote-kpo")
    assert allowed.returncode == 0, allowed.stderr  # positive control: the session's role, with its path, is trusted
    wrong_id = cli(*assume, "--external-id", "other")
    assert wrong_id.returncode == 254 and "(AccessDenied)" in wrong_id.stderr
    sign(cli, "aws", dict(AWS_LOGIN, Arn="arn:aws:iam::210987654321:user/sam"))
    stranger = cli(*assume, "--external-id", "x-remote-kpo")
    assert stranger.returncode == 254 and "not authorized to perform: sts:AssumeRole" in stranger.stderr


def test_get_role_names_the_role_with_its_path(cli):
    arn = cli("aws", "iam", "get-role", "--role-name", "Dev", "--query", "Role.Arn", "--output", "text")
    assert arn.stdout.strip() == "arn:aws:iam::210987654321:role/team/Dev"


def test_missing_tools_are_not_on_path(tmp_path):
    double = CliDouble(tmp_path / "double", {}, missing=("gcloud", "kubectl"))
    path = double.env(dict(os.environ))["PATH"]
    assert shutil.which("gcloud", path=path) is None and shutil.which("kubectl", path=path) is None
    assert shutil.which("az", path=path) and shutil.which("sed", path=path) and shutil.which("python3", path=path)
    full = CliDouble(tmp_path / "full", {}).env(dict(os.environ))["PATH"]
    assert shutil.which("gcloud", path=full).startswith(str(tmp_path / "full"))  # positive control: the stand-in
