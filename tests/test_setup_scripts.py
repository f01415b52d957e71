"""scripts/setup_remote.sh per cloud, against the recording CLI stand-in (tests/cloud_cli_double).

SIMULATED: the cloud CLIs and kubectl. The stand-in keeps a model of the remote side (IAM,
clusters, access entries, bindings, federated credentials, applied RBAC objects) and of who is
signed in, decides `kubectl auth can-i` from the RBAC that was applied, and records every call
with whether it changed that model. The script, write_connection.py and the files they write
are real. Projects are rendered with the users' own ids (the template's example ids are
refused before anything runs, shown below).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cloud_cli_double import CliDouble
from conftest import CONFIG, CUSTOM

ISSUER = "https://oidc.astronomer.example/abc123"
SUBJECTS = ["system:serviceaccount:astro-x:worker", "system:serviceaccount:astro-x:triggerer"]
# The users' own ids for the answers whose defaults are the template's examples.
OWN = {key: CUSTOM[key] for key in ("aws_account_id", "aws_astro_workload_identity_arn", "gcp_project_id",
                                    "gcp_service_account_email", "azure_subscription_id", "azure_resource_group",
                                    "azure_tenant_id", "azure_identity_client_id", "azure_identity_object_id")}
ACCOUNT = OWN["aws_account_id"]
ROLE = "remote-kpo-kpo-runner"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
# Who runs the script: an SSO session of a role with a path, a Google user, an Entra user.
SSO_ROLE = "AWSReservedSSO_PlatformAdmin_0123456789abcdef"
SSO_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/{SSO_ROLE}"
GOOGLE_ACCOUNT = "jane@corp.example"
ENTRA_USER, ENTRA_OID = "jane@corp.example", "4c3b2a19-0f8e-4d7c-b6a5-948372615abc"
SP_APP_ID, SP_OID = "8d7c6b5a-4938-4271-a0b9-c8d7e6f5a4b3", "6f5e4d3c-2b1a-4098-8765-43210fedcba9"
LOGIN = {
    "aws": {"Account": ACCOUNT, "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{SSO_ROLE}/jane", "UserId": "AROADOUBLE:jane"},
    "gcp": {"account": GOOGLE_ACCOUNT, "project": OWN["gcp_project_id"]},
    "azure": {"user": {"name": ENTRA_USER, "type": "user"}, "objectId": ENTRA_OID,
              "tenantId": OWN["azure_tenant_id"], "subscriptions": [OWN["azure_subscription_id"]]},
}


def remote_side(cloud: str, **changes) -> dict:
    """The remote side before setup: the cluster exists, nothing of this project does, and the
    person running the script is signed in to the project's account, project or subscription."""
    name = CONFIG["cluster_name"]
    state = {
        "aws": {"aws": {"clusters": {name: {"region": CONFIG["aws_region"], "mode": "API_AND_CONFIG_MAP",
                                            "endpoint": "https://ABC.gr7.us-east-1.eks.amazonaws.com"}},
                        "roles": {SSO_ROLE: {"Version": "2012-10-17", "Statement": []}},
                        "role_paths": {SSO_ROLE: "/aws-reserved/sso.amazonaws.com/"}}},
        "gcp": {"gcp": {"clusters": {name: {"endpoint": "203.0.113.5"}}, "projects": [OWN["gcp_project_id"]]}},
        "azure": {"azure": {"clusters": {name: {"fqdn": "gpu-cluster-abc.hcp.eastus.azmk8s.io"}},
                            "identities": [{"name": "airflow-runner", "resourceGroup": "identities-rg",
                                            "clientId": OWN["azure_identity_client_id"],
                                            "federatedCredentials": []}]}},
        "generic": {},
    }[cloud]
    if cloud in LOGIN:
        state[cloud]["login"] = json.loads(json.dumps(LOGIN[cloud]))
    for key, value in changes.items():
        state[cloud][key] = value
    return state


def cloud_args(cloud: str, project: Path) -> list[str]:
    if cloud == "azure":
        return ["--issuer", ISSUER, *(a for s in SUBJECTS for a in ("--subject", s))]
    if cloud == "generic":
        (project / "admin.kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
        return ["--kubeconfig", "admin.kubeconfig", "--context", "admin"]
    return []


class Setup:
    def __init__(self, project: Path, double: CliDouble, cloud: str, home: Path):
        self.project, self.double, self.cloud, self.home = project, double, cloud, home

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scripts/setup_remote.sh", *cloud_args(self.cloud, self.project), *args],
                              cwd=self.project, capture_output=True, text=True, timeout=180,
                              env=self.double.env(dict(os.environ, HOME=str(self.home))))

    def set_state(self, state: dict) -> None:
        self.double.state_file.write_text(json.dumps(state))


@pytest.fixture
def setup(render, tmp_path):
    def make(cloud: str, xcom: bool = True, state: dict | None = None, missing: tuple[str, ...] = (),
             examples: bool = False, **options) -> Setup:
        project, home = tmp_path / "project", tmp_path / "home"
        home.mkdir()
        answers = {"cloud": cloud, "xcom": xcom, **options, **({} if examples else OWN)}
        shutil.copytree(render(answers).path, project)
        double = CliDouble(tmp_path / "double", remote_side(cloud) if state is None else state, missing=missing)
        return Setup(project, double, cloud, home)
    return make


def words(argv: list[str], n: int = 3) -> str:
    """A call's tool and subcommand, e.g. 'aws iam create-role' or 'kubectl apply k8s/role.yaml'."""
    plain, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in ("--kubeconfig", "--context"):
            skip = True
        elif i == 0 or not arg.startswith("-"):
            plain.append("KUBECONFIG=x" if arg.startswith("KUBECONFIG=") else arg)
    if plain[:2] == ["kubectl", "apply"]:
        return " ".join(plain[:3])
    return " ".join(plain[:n])


def printed(stdout: str, prefix: str) -> list[str]:
    return [line.removeprefix(prefix).split()[0] + " " + " ".join(
        w for w in line.removeprefix(prefix).split()[1:3] if not w.startswith("-"))
        for line in stdout.splitlines() if line.startswith(prefix)]


# What a first run changes on each cloud, in order.
# The namespace, its LimitRange and ResourceQuota, (generic: the ServiceAccount,) Role, RoleBinding.
APPLY = ["kubectl apply k8s/namespace.yaml", "kubectl apply k8s/resource-defaults.yaml", "kubectl apply k8s/resourcequota.yaml",
         "kubectl apply k8s/role.yaml", "kubectl apply k8s/rolebinding.yaml"]
FIRST_RUN_CHANGES = {
    "aws": ["aws iam create-role", "aws eks create-access-entry", *APPLY],
    "gcp": ["gcloud projects add-iam-policy-binding", *APPLY],
    "azure": ["az identity federated-credential", "az identity federated-credential", *APPLY],
    "generic": [*APPLY[:3], "kubectl apply k8s/serviceaccount.yaml", *APPLY[3:]],
}
# What --dry-run on a fresh remote side plans, can-i checks aside, in order.
DRY_RUN_PLAN = {
    "aws": ["aws iam create-role", "aws eks create-access-entry", "aws eks update-kubeconfig", *APPLY,
            "aws eks describe-cluster"],
    "gcp": ["gcloud projects add-iam-policy-binding", "env KUBECONFIG=x gcloud", *APPLY, "gcloud container clusters"],
    "azure": ["az identity federated-credential", "az identity federated-credential", "az aks get-credentials",
              "kubelogin convert-kubeconfig azurecli", *APPLY, "az aks show"],
    "generic": [*FIRST_RUN_CHANGES["generic"], "kubectl config view", "kubectl create token"],
}
KUBECTL_APPLIED = {cloud: [words.split("k8s/")[1] for words in FIRST_RUN_CHANGES[cloud] if "kubectl apply" in words]
                   for cloud in FIRST_RUN_CHANGES}


@pytest.mark.parametrize("cloud", CONFIG["cloud"])
def test_dry_run_prints_the_plan_and_changes_nothing(setup, cloud):
    s = setup(cloud)
    before = s.double.state
    done = s.run("--dry-run")
    assert done.returncode == 0, done.stderr
    assert s.double.state == before
    assert s.double.changes() == []
    # Every call it made was a read-only query, and it printed each one.
    assert all(c["changed"] is False for c in s.double.calls())
    assert done.stderr.count("query:") == len(s.double.calls())
    planned = [line.split(":", 1)[1].split() for line in done.stdout.splitlines() if line.startswith("would run:")]
    heads = [words(cmd) for cmd in planned if "can-i" not in cmd]
    assert heads == DRY_RUN_PLAN[cloud]
    applied = [cmd[-1].removeprefix("k8s/") for cmd in planned if "apply" in cmd]
    assert applied == KUBECTL_APPLIED[cloud]
    # One can-i per permission the Role grants, asked as the Airflow identity.
    can_i = [cmd for cmd in planned if "can-i" in cmd]
    assert len(can_i) == permission_count(s.project)
    assert "would run: " in done.stdout and "would write: airflow_settings.yaml, connection.env" in done.stdout


def role_rules(project: Path) -> list[dict]:
    return yaml.safe_load((project / "k8s" / "role.yaml").read_text())["rules"]


def permission_count(project: Path) -> int:
    """Rows of the can-i table: one per verb and resource the Role grants."""
    return sum(len(r["verbs"]) * len(r["resources"]) for r in role_rules(project))


@pytest.mark.parametrize("cloud", CONFIG["cloud"])
def test_first_run_sets_up_verifies_and_connects(setup, cloud):
    s = setup(cloud)
    done = s.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert [words(c) for c in s.double.changes()] == FIRST_RUN_CHANGES[cloud]
    table = [line.split() for line in done.stdout.splitlines() if line.endswith(("PASS", "FAIL"))]
    assert len(table) == permission_count(s.project)
    assert {row[-1] for row in table} == {"PASS"}
    settings = yaml.safe_load((s.project / "airflow_settings.yaml").read_text())["airflow"]
    server = settings["connections"][0]["conn_extra"]["kube_config"]["clusters"][0]["cluster"]["server"]
    assert "example.invalid" not in server
    assert (s.project / "connection.env").stat().st_mode & 0o077 == 0
    if cloud == "generic":
        assert "eyJ" not in done.stdout + done.stderr, "the token is never printed"


@pytest.mark.parametrize("cloud", CONFIG["cloud"])
def test_second_run_changes_nothing(setup, cloud):
    s = setup(cloud)
    assert s.run().returncode == 0
    after_first = s.double.state
    s.double.reset_log()
    done = s.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.double.changes() == []
    assert s.double.state == after_first
    assert not any(line.startswith("running:") and " apply " in line for line in done.stdout.splitlines())
    assert "unchanged: k8s/role.yaml" in done.stderr


@pytest.mark.parametrize("cloud", ["aws", "generic"])
def test_a_missing_permission_fails_the_table_and_writes_no_connection(setup, cloud):
    s = setup(cloud)
    role = s.project / "k8s" / "role.yaml"
    role.write_text(role.read_text().replace('"create", "delete", "get", "list", "patch"', '"create", "delete", "get", "list"'))
    placeholder = (s.project / "airflow_settings.yaml").read_text()
    done = s.run()
    assert done.returncode == 1
    assert "patch    pods           FAIL" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("ERROR: the Airflow identity lacks the permissions marked FAIL")
    assert (s.project / "airflow_settings.yaml").read_text() == placeholder
    assert not (s.project / "connection.env").exists()


def test_a_missing_subresource_permission_fails_its_row(setup):
    """kubectl auth can-i reads "pods/log" as the pod named log (allowed by `get pods`): the
    table must ask with --subresource, or a Role without pods/log passes."""
    s = setup("generic")
    role = s.project / "k8s" / "role.yaml"
    text = role.read_text()
    assert '    resources: ["pods/log"]\n    verbs: ["get"]' in text
    role.write_text(text.replace('    resources: ["pods/log"]\n    verbs: ["get"]', '    resources: ["pods/log"]\n    verbs: []'))
    done = s.run()
    assert done.returncode == 1
    assert re.search(r"^get +pods/log +FAIL$", done.stdout, re.M), done.stdout
    assert re.search(r"^get +pods +PASS$", done.stdout, re.M), "control: get pods itself is still granted"


def test_aws_trust_policy_drift_is_put_back(setup):
    s = setup("aws")
    assert s.run().returncode == 0
    state = s.double.state
    state["aws"]["roles"][ROLE]["Statement"][0]["Principal"]["AWS"] = "arn:aws:iam::999999999999:root"
    s.set_state(state)
    s.double.reset_log()
    assert s.run().returncode == 0
    assert [words(c) for c in s.double.changes()] == ["aws iam update-assume-role-policy"]


def test_aws_missing_cluster_is_created_only_when_asked(setup):
    s = setup("aws", state=remote_side("aws", clusters={}))
    done = s.run()
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ERROR: cluster {CONFIG['cluster_name']} not found in {CONFIG['aws_region']} of account {ACCOUNT}; check the "
        "project's cluster_name and aws_region answers, or run again with --create-cluster to create it from "
        "aws/cluster.yaml")
    assert s.double.changes() == [], "refused before any change"
    s.double.reset_log()
    done = s.run("--create-cluster")
    assert done.returncode == 0, done.stdout + done.stderr
    # The role exists before eksctl maps it; eksctl makes the access entry itself.
    assert [words(c) for c in s.double.changes()][:2] == ["aws iam create-role", "eksctl create cluster"]
    assert "aws eks create-access-entry" not in [words(c) for c in s.double.changes()]


def test_aws_config_map_only_cluster_is_refused_with_the_command_to_fix_it(setup):
    state = remote_side("aws")
    state["aws"]["clusters"][CONFIG["cluster_name"]]["mode"] = "CONFIG_MAP"
    s = setup("aws", state=state)
    done = s.run()
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ERROR: cluster {CONFIG['cluster_name']}: authentication mode CONFIG_MAP has no access entries")
    assert "aws eks update-cluster-config" in last and "authenticationMode=API_AND_CONFIG_MAP" in last
    assert "aws eks create-access-entry" not in [words(c) for c in s.double.changes()]


def test_azure_needs_the_deployment_issuer_and_subjects(setup, render, tmp_path):
    s = setup("azure")
    done = subprocess.run(["scripts/setup_remote.sh"], cwd=s.project, capture_output=True, text=True,
                          env=s.double.env(dict(os.environ)))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[0]]
    assert done.stderr.startswith("ERROR: --issuer/--subject: ")
    assert s.double.calls() == []


def test_unknown_option_is_one_clear_line(setup):
    s = setup("gcp")
    done = s.run("--force")
    assert done.returncode == 1
    assert done.stderr.strip() == ("ERROR: --force: unknown option; allowed: --dry-run, --local-developer, --help and "
                                   "the options listed by --help")


@pytest.mark.parametrize("cloud", CONFIG["cloud"])
def test_help_names_every_option(setup, cloud):
    s = setup(cloud)
    done = subprocess.run(["scripts/setup_remote.sh", "--help"], cwd=s.project, capture_output=True, text=True)
    assert done.returncode == 0
    assert "--dry-run" in done.stdout and "--local-developer" in done.stdout
    extra = {"aws": ["--create-cluster"], "azure": ["--issuer", "--subject", "--skip-federation"],
             "generic": ["--kubeconfig", "--context"], "gcp": []}[cloud]
    assert all(option in done.stdout for option in extra)


# The native operator and the GPU node group DAG add IAM, and only then.
OPTION_FIRST_RUN = {
    "aws-native-gpu": ["aws iam create-role", "aws iam put-role-policy", "aws iam create-role",
                       "aws iam attach-role-policy", "aws iam attach-role-policy", "aws iam attach-role-policy",
                       "aws iam create-service-linked-role", "aws eks create-access-entry", *APPLY],
    "aws-native": ["aws iam create-role", "aws iam put-role-policy", "aws eks create-access-entry", *APPLY],
    "gcp-gpu": ["gcloud projects add-iam-policy-binding", "gcloud iam roles", "gcloud projects add-iam-policy-binding",
                "gcloud iam service-accounts", "gcloud projects add-iam-policy-binding", "gcloud iam service-accounts",
                *APPLY],
}
OPTIONS = {"aws-native-gpu": {"cloud": "aws", "pod_operator": "native", "gpu_node_group": True},
           "aws-native": {"cloud": "aws", "pod_operator": "native"},
           "gcp-gpu": {"cloud": "gcp", "gpu_node_group": True}}


@pytest.mark.parametrize("case", OPTION_FIRST_RUN)
def test_options_add_their_iam_once(setup, case):
    options = dict(OPTIONS[case])
    cloud = options.pop("cloud")
    s = setup(cloud, **options)
    dry = s.run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert s.double.changes() == []
    done = s.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert [words(c) for c in s.double.changes()] == OPTION_FIRST_RUN[case]
    local_only = ("can-i", "update-kubeconfig", "get-credentials", "describe-cluster", "clusters describe")
    planned = [words(line.split(":", 1)[1].split()) for line in dry.stdout.splitlines()
               if line.startswith("would run:") and not any(w in line for w in local_only)]
    assert planned == OPTION_FIRST_RUN[case], "the dry run plans what the first run does"
    settings = yaml.safe_load((s.project / "airflow_settings.yaml").read_text())["airflow"]
    types = [c["conn_type"] for c in settings["connections"]]
    if options.get("pod_operator") == "native":
        assert types == ["aws"], "the native operator uses the cloud connection only"
    elif options.get("gpu_node_group"):
        assert types == ["kubernetes", "google_cloud_platform"], "node pools go through the cloud's API"
    s.double.reset_log()
    again = s.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert s.double.changes() == []


# --local-developer: the signed-in developer is admitted too, for `astro dev start`.
def developer_rolebindings(state: dict) -> list[dict]:
    return [o for key, o in state.get("k8s", {}).items() if key.startswith("RoleBinding/") and "-dev-" in key]


def table_rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.endswith(("PASS", "FAIL"))]


@pytest.mark.parametrize("cloud", CONFIG["cloud"])
def test_local_developer_is_planned_admitted_checked_and_idempotent(setup, cloud):
    s = setup(cloud)
    before = s.double.state
    dry = s.run("--dry-run", "--local-developer")
    assert dry.returncode == 0, dry.stderr
    assert s.double.changes() == [] and s.double.state == before
    assert not (s.home / ".aws").exists(), "the dry run makes no folder either"
    planned = dry.stdout.splitlines()
    perms = permission_count(s.project)
    done = s.run("--local-developer")
    assert done.returncode == 0, done.stdout + done.stderr
    state, rows = s.double.state, table_rows(done.stdout)
    if cloud == "aws":
        # One statement more, for the SSO session's role (with its path), with the same ExternalId.
        assert any(line.startswith("would run: aws iam create-role") for line in planned)
        assert any(line.startswith("would run: aws sts assume-role") for line in planned)
        deployment, mine = state["aws"]["roles"][ROLE]["Statement"]
        assert mine["Principal"] == {"AWS": SSO_ROLE_ARN}
        assert mine["Condition"] == deployment["Condition"] and mine["Action"] == "sts:AssumeRole"
        assert mine["Sid"].startswith("LocalDeveloper")
        assert rows[0] == ["sts:AssumeRole", ROLE, "as", SSO_ROLE_ARN + ":", "PASS"]
        assert len(rows) == 1 + perms
        assert (s.home / ".aws" / "sso" / "cache").is_dir(), "the compose mount's source exists, made by you"
    elif cloud in ("gcp", "azure"):
        (binding,) = developer_rolebindings(state)
        names = [subject["name"] for subject in binding["subjects"]]
        assert names == ([GOOGLE_ACCOUNT] if cloud == "gcp" else [ENTRA_OID, ENTRA_USER])
        assert {subject["kind"] for subject in binding["subjects"]} == {"User"}
        assert binding["roleRef"]["name"] == "airflow-kpo-runner"
        assert (s.project / "k8s" / "rolebinding.yaml").read_text().count("- kind:") == 1, "the rendered file is untouched"
        assert any("local-developer-rolebinding.yaml" in line for line in planned if line.startswith("would run:"))
        assert sum(f"--as {names[0]}" in line for line in planned if "can-i" in line) == perms
        assert len(rows) == perms and all(row[-2:] == ["PASS", "PASS"] for row in rows), "airflow and developer columns"
    else:
        assert "local developer: nothing to admit" in dry.stderr + done.stderr
        assert developer_rolebindings(state) == []
    again_state = s.double.state
    s.double.reset_log()
    again = s.run("--local-developer")
    assert again.returncode == 0, again.stdout + again.stderr
    assert s.double.changes() == [] and s.double.state == again_state, "a second run changes nothing"
    # A plain run afterwards keeps the developer and changes nothing.
    plain = s.run()
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert s.double.changes() == [] and s.double.state == again_state


def test_local_developer_aws_iam_user_and_root(setup):
    user = f"arn:aws:iam::{ACCOUNT}:user/jane"
    s = setup("aws", state=remote_side("aws", login={"Account": ACCOUNT, "Arn": user, "UserId": "AIDADOUBLE"}))
    done = s.run("--local-developer")
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.double.state["aws"]["roles"][ROLE]["Statement"][1]["Principal"] == {"AWS": user}
    s.set_state(remote_side("aws", login={"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root", "UserId": ACCOUNT}))
    s.double.reset_log()
    root = s.run("--local-developer")
    assert root.returncode == 1 and s.double.changes() == []
    assert one_error_line(root).startswith("ERROR: --local-developer: you are signed in as the root user")


def test_local_developer_azure_service_principal(setup):
    login = dict(LOGIN["azure"], user={"name": SP_APP_ID, "type": "servicePrincipal"}, objectId=SP_OID)
    s = setup("azure", state=remote_side("azure", login=login))
    done = s.run("--local-developer")
    assert done.returncode == 0, done.stdout + done.stderr
    (binding,) = developer_rolebindings(s.double.state)
    assert [subject["name"] for subject in binding["subjects"]] == [SP_OID]


def test_a_second_developer_is_added_beside_the_first(setup):
    s = setup("aws")
    assert s.run("--local-developer").returncode == 0
    other = f"arn:aws:iam::{ACCOUNT}:user/sam"
    state = s.double.state
    state["aws"]["login"] = {"Account": ACCOUNT, "Arn": other, "UserId": "AIDASAM"}
    s.set_state(state)
    s.double.reset_log()
    assert s.run("--local-developer").returncode == 0
    principals = [st["Principal"]["AWS"] for st in s.double.state["aws"]["roles"][ROLE]["Statement"]]
    assert principals == [OWN["aws_astro_workload_identity_arn"], SSO_ROLE_ARN, other]
    assert [words(c) for c in s.double.changes()] == ["aws iam update-assume-role-policy"]


# Setup errors that point at the cause: each stops with one ERROR line, before any change, in a
# dry run and in a real run; a failed read other than "not found" never plans a create.
def one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == errors[0], "the ERROR line is the last one"
    return errors[0]


def without_login(cloud: str) -> dict:
    state = remote_side(cloud)
    del state[cloud]["login"]
    return state


def with_login(cloud: str, **changes) -> dict:
    return remote_side(cloud, login=dict(LOGIN[cloud], **changes))


ERROR_CASES = {
    # case: (cloud, state, missing tools, start of the ERROR line, CLI text shown whole)
    "aws-not-installed": ("aws", None, ("aws",), "ERROR: aws is not installed or not on PATH; install the AWS CLI", []),
    "aws-kubectl-not-installed": ("aws", None, ("kubectl",), "ERROR: kubectl is not installed or not on PATH", []),
    "aws-not-signed-in": ("aws", without_login("aws"), (), "ERROR: aws: not signed in, or the sign-in expired",
                          ["Unable to locate credentials"]),
    "aws-expired": ("aws", with_login("aws", expired=True), (), "ERROR: aws: not signed in, or the sign-in expired",
                    ["(ExpiredToken)"]),
    "aws-wrong-account": ("aws", with_login("aws", Account="999999999999"), (),
                          f"ERROR: aws: signed in to account 999999999999 as arn:aws:sts::{ACCOUNT}:assumed-role/", []),
    "aws-denied-read": ("aws", remote_side("aws", deny=["iam get-role"]), (),
                        "ERROR: aws: not allowed: aws iam get-role --role-name ", ["(AccessDenied)"]),
    "gcp-not-installed": ("gcp", None, ("gcloud",), "ERROR: gcloud is not installed or not on PATH", []),
    "gcp-not-signed-in": ("gcp", without_login("gcp"), (), "ERROR: gcloud: no account is signed in; run gcloud auth login", []),
    "gcp-expired": ("gcp", with_login("gcp", expired=True), (), "ERROR: gcloud: not signed in, or the sign-in expired",
                    ["Reauthentication failed", "$ gcloud auth login", "to obtain new credentials."]),
    "gcp-wrong-project": ("gcp", remote_side("gcp", projects=["another-project"]), (),
                          f"ERROR: gcloud: {GOOGLE_ACCOUNT} cannot see project {OWN['gcp_project_id']}",
                          ["does not have permission", "reason: IAM_PERMISSION_DENIED"]),
    "gcp-denied-read": ("gcp", remote_side("gcp", deny=["projects get-iam-policy"]), (),
                        f"ERROR: gcloud: not allowed: gcloud projects get-iam-policy {OWN['gcp_project_id']}",
                        ["does not have permission", "reason: IAM_PERMISSION_DENIED"]),
    "azure-not-installed": ("azure", None, ("az",), "ERROR: az is not installed or not on PATH; install the Azure CLI", []),
    "azure-kubelogin-not-installed": ("azure", None, ("kubelogin",), "ERROR: kubelogin is not installed", []),
    "azure-not-signed-in": ("azure", without_login("azure"), (), "ERROR: az: not signed in, or the sign-in expired",
                            ["Please run 'az login' to setup account."]),
    "azure-expired": ("azure", with_login("azure", expired=True), (), "ERROR: az: not signed in, or the sign-in expired",
                      ["AADSTS700082", "Interactive authentication is needed. Please run:", "az login"]),
    "azure-wrong-subscription": ("azure", with_login("azure", subscriptions=["aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"]), (),
                                 f"ERROR: az: subscription {OWN['azure_subscription_id']} is not one the signed-in account",
                                 ["not found. Check the spelling"]),
    "azure-wrong-tenant": ("azure", with_login("azure", tenantId="aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"), (),
                           f"ERROR: az: subscription {OWN['azure_subscription_id']} is in tenant aaaaaaaa-", []),
    "azure-denied-read": ("azure", remote_side("azure", deny=["identity list"]), (),
                          "ERROR: az: not allowed: az identity list", ["(AuthorizationFailed)", "Code: AuthorizationFailed"]),
    "generic-not-installed": ("generic", None, ("kubectl",), "ERROR: kubectl is not installed or not on PATH", []),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_setup_errors_name_the_cause_before_any_change(setup, case):
    cloud, state, missing, error, shown = ERROR_CASES[case]
    s = setup(cloud, state=state, missing=missing)
    before = s.double.state
    for args in (["--dry-run"], [], ["--local-developer"]):
        done = s.run(*args)
        assert done.returncode == 1, done.stdout + done.stderr
        assert one_error_line(done).startswith(error), done.stderr
        assert all(text in done.stderr for text in shown), done.stderr
        assert not any(line.startswith(("would run:", "running:")) for line in done.stdout.splitlines()), done.stdout
        assert s.double.changes() == [] and s.double.state == before
    if missing:
        assert all(call["argv"][0] not in missing for call in s.double.calls()), "the missing tool was never run"
    assert not (s.project / "connection.env").exists()


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_the_template_example_answers_are_refused_before_any_call(setup, cloud):
    s = setup(cloud, examples=True)
    for args in (["--dry-run"], []):
        done = s.run(*args)
        assert done.returncode == 1
        line = one_error_line(done)
        assert "still the template's example values; render the project again with your own" in line
        assert line.split(":", 2)[1].strip().split(", ")[0] in OWN
    assert s.double.calls() == [], "no CLI was asked anything"


def test_write_connection_shows_the_cli_error_whole(setup):
    s = setup("gcp", state=with_login("gcp", expired=True))
    done = subprocess.run(["python3", "scripts/write_connection.py"], cwd=s.project, capture_output=True, text=True,
                          env=s.double.env(dict(os.environ)), timeout=60)
    assert done.returncode == 1
    assert all(text in done.stderr for text in ("Reauthentication failed", "$ gcloud auth login", "to obtain new credentials."))
    assert one_error_line(done).startswith("ERROR: gcloud container clusters describe ... failed (exit 1)")


# Local runs on AWS: docker-compose.override.yml puts your ~/.aws where botocore, running as the
# container user, looks. Shown with the real botocore of this venv against a folder laid out as
# the mounts lay out the container (symlinks stand in for bind mounts), for an SSO profile (token
# from the cache, role credentials from a local SSO endpoint), static keys and env keys.
SSO_CONFIG = """[profile corp]
sso_session = corp
sso_account_id = 210987654321
sso_role_name = PlatformAdmin
region = us-east-1

[sso-session corp]
sso_start_url = https://corp.awsapps.example/start
sso_region = us-east-1
sso_registration_scopes = sso:account:access

[profile keys]
region = us-east-1
"""
BOTO = """import sys, boto3
credentials = boto3.Session(profile_name=sys.argv[1] or None).get_credentials()
print(credentials.get_frozen_credentials().access_key)
"""


class SsoPortal(BaseHTTPRequestHandler):
    """The SSO portal's GetRoleCredentials, for the cached token only."""

    def do_GET(self):  # noqa: N802
        ok = self.headers.get("x-amz-sso_bearer_token") == "cached-sso-access-token"
        body = json.dumps({"roleCredentials": {"accessKeyId": "ASIAFROMSSO", "secretAccessKey": "s", "sessionToken": "t",
                                               "expiration": 4102444800000}} if ok else {"message": "bad token"})
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def sso_portal():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SsoPortal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def developer_aws_folder(home: Path) -> None:
    aws = home / ".aws"
    (aws / "sso" / "cache").mkdir(parents=True)
    (aws / "config").write_text(SSO_CONFIG)
    (aws / "credentials").write_text("[keys]\naws_access_key_id = AKIAFROMKEYS\naws_secret_access_key = s\n")
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (aws / "sso" / "cache" / (hashlib.sha1(b"corp").hexdigest() + ".json")).write_text(json.dumps({
        "startUrl": "https://corp.awsapps.example/start", "region": "us-east-1", "accessToken": "cached-sso-access-token",
        "expiresAt": expires}))


def container_view(compose: dict, host_home: Path, root: Path) -> dict:
    """Lay out the scheduler's mounts under root; return its environment with paths under root."""
    service = compose["services"]["scheduler"]
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        path = root / target.lstrip("/")
        if not os.path.lexists(path) and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(Path(source.replace("${HOME}", str(host_home))))
    return {key: str(root / value.lstrip("/")) if value.startswith("/") else value
            for key, value in (service.get("environment") or {}).items()}


def botocore_in_container(root: Path, home: str, env: dict, profile: str, portal: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(root / home.lstrip("/")), "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_SSO": portal, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    return subprocess.run([sys.executable, "-c", BOTO, profile], capture_output=True, text=True, timeout=60,
                          env=base | env)


# The container user's home: AIRFLOW_HOME in Runtime 3 images, /home/astro in older ones.
@pytest.mark.parametrize("home", ["/usr/local/airflow", "/home/astro"])
def test_local_aws_credentials_work_in_the_container_sso_keys_and_env(render, tmp_path, sso_portal, home):
    project = render({"cloud": "aws", "xcom": True, **OWN})
    compose = yaml.safe_load((project.path / "docker-compose.override.yml").read_text())
    assert compose["services"]["triggerer"] == compose["services"]["scheduler"], "the triggerer signs in the same way"
    host_home, root = tmp_path / "host", tmp_path / "container"
    developer_aws_folder(host_home)
    env = container_view(compose, host_home, root)
    read_only = [v for v in compose["services"]["scheduler"]["volumes"] if v.endswith(":ro")]
    assert {v.split(":")[1] for v in read_only} == {"/usr/local/airflow/.aws", "/home/astro/.aws"}
    writable = set(compose["services"]["scheduler"]["volumes"]) - set(read_only)
    assert {v.split(":")[1] for v in writable} == {f"{h}/.aws/sso/cache" for h in ("/usr/local/airflow", "/home/astro")}, \
        "only the SSO token cache, which botocore rewrites when it refreshes a token"
    sso = botocore_in_container(root, home, env, "corp", sso_portal)
    assert sso.stdout.strip() == "ASIAFROMSSO", sso.stderr
    keys = botocore_in_container(root, home, env, "keys", sso_portal)
    assert keys.stdout.strip() == "AKIAFROMKEYS", keys.stderr
    # .env's keys, with .env's own AWS_PROFILE line as rendered (commented out: a profile ~/.aws
    # lacks, even "default", would stop botocore before it looks at the keys).
    dotenv = dict(line.split("=", 1) for line in (project.path / ".env").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert "AWS_PROFILE" not in dotenv
    keys_in_env = {"AWS_ACCESS_KEY_ID": "ASIAFROMENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    from_env = botocore_in_container(root, home, env | dotenv | keys_in_env, "", sso_portal)
    assert from_env.stdout.strip() == "ASIAFROMENV", from_env.stderr
    stale = botocore_in_container(root, home, env | keys_in_env | {"AWS_PROFILE": "default"}, "", sso_portal)
    assert "The config profile (default) could not be found" in stale.stderr  # why the line stays commented


def test_the_old_mount_loses_the_sso_token(tmp_path, sso_portal):
    """Positive control: ~/.aws mounted elsewhere with AWS_CONFIG_FILE pointing there finds the
    profile but not its SSO token, as reported (botocore reads the cache from its own home)."""
    old = {"services": {"scheduler": {"volumes": ["${HOME}/.aws:/opt/remote-kpo/aws:ro"],
                                      "environment": {"AWS_CONFIG_FILE": "/opt/remote-kpo/aws/config",
                                                      "AWS_SHARED_CREDENTIALS_FILE": "/opt/remote-kpo/aws/credentials"}}}}
    host_home, root = tmp_path / "host", tmp_path / "container"
    developer_aws_folder(host_home)
    env = container_view(old, host_home, root)
    (root / "usr/local/airflow").mkdir(parents=True)
    sso = botocore_in_container(root, "/usr/local/airflow", env, "corp", sso_portal)
    assert sso.returncode != 0 and "Token for corp does not exist" in sso.stderr, sso.stderr
    keys = botocore_in_container(root, "/usr/local/airflow", env, "keys", sso_portal)
    assert keys.stdout.strip() == "AKIAFROMKEYS", keys.stderr


def test_dry_run_after_setup_plans_only_the_manifests_that_differ(setup):
    """The dry run asks `kubectl diff` (read-only) like the real run: an edited Role is the one apply it plans.
    Generic clusters only: on EKS, GKE and AKS the admin kubeconfig the diff needs is fetched by a cloud CLI
    call the dry run does not make, so there it plans every apply (as it says)."""
    s = setup("generic")
    assert s.run().returncode == 0
    role_file = s.project / "k8s" / "role.yaml"
    role = yaml.safe_load(role_file.read_text())
    role["metadata"].setdefault("labels", {})["team"] = "ml"
    role_file.write_text(yaml.safe_dump(role))
    s.double.reset_log()
    done = s.run("--dry-run")
    assert done.returncode == 0, done.stderr
    assert s.double.changes() == []
    planned = [line.split(":", 1)[1].split() for line in done.stdout.splitlines() if line.startswith("would run:")]
    assert [cmd[-1] for cmd in planned if "apply" in cmd] == ["k8s/role.yaml"], done.stdout
    assert "unchanged: k8s/rolebinding.yaml" in done.stderr and "unchanged: k8s/namespace.yaml" in done.stderr
