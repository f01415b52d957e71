"""scripts/setup_remote.sh per cloud, against the recording CLI stand-in (tests/cloud_cli_double).

SIMULATED: the cloud CLIs and kubectl. The stand-in keeps a model of the remote side (IAM,
clusters, access entries, bindings, federated credentials, applied RBAC objects), decides
`kubectl auth can-i` from the RBAC that was applied, and records every call with whether it
changed that model. The script, write_connection.py and the files they write are real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cloud_cli_double import CliDouble
from conftest import CONFIG

ISSUER = "https://oidc.astronomer.example/abc123"
SUBJECTS = ["system:serviceaccount:astro-x:worker", "system:serviceaccount:astro-x:triggerer"]
ROLE = "remote-kpo-kpo-runner"
ROLE_ARN = f"arn:aws:iam::{CONFIG['aws_account_id']}:role/{ROLE}"


def remote_side(cloud: str, **changes) -> dict:
    """The remote side before setup: the cluster exists, nothing of this project does."""
    name = CONFIG["cluster_name"]
    state = {
        "aws": {"aws": {"clusters": {name: {"region": CONFIG["aws_region"], "mode": "API_AND_CONFIG_MAP",
                                            "endpoint": "https://ABC.gr7.us-east-1.eks.amazonaws.com"}}}},
        "gcp": {"gcp": {"clusters": {name: {"endpoint": "203.0.113.5"}}}},
        "azure": {"azure": {"clusters": {name: {"fqdn": "gpu-cluster-abc.hcp.eastus.azmk8s.io"}},
                            "identities": [{"name": "airflow-runner", "resourceGroup": "identities-rg",
                                            "clientId": CONFIG["azure_identity_client_id"],
                                            "federatedCredentials": []}]}},
        "generic": {},
    }[cloud]
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
    def __init__(self, project: Path, double: CliDouble, cloud: str):
        self.project, self.double, self.cloud = project, double, cloud

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scripts/setup_remote.sh", *cloud_args(self.cloud, self.project), *args],
                              cwd=self.project, capture_output=True, text=True, env=self.double.env(dict(os.environ)),
                              timeout=120)


@pytest.fixture
def setup(render, tmp_path):
    def make(cloud: str, xcom: bool = True, state: dict | None = None, **options) -> Setup:
        project = tmp_path / "project"
        shutil.copytree(render({"cloud": cloud, "xcom": xcom, **options}).path, project)
        return Setup(project, CliDouble(tmp_path / "double", remote_side(cloud) if state is None else state), cloud)
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
APPLY = ["kubectl apply k8s/namespace.yaml", "kubectl apply k8s/role.yaml", "kubectl apply k8s/rolebinding.yaml"]
FIRST_RUN_CHANGES = {
    "aws": ["aws iam create-role", "aws eks create-access-entry", *APPLY],
    "gcp": ["gcloud projects add-iam-policy-binding", *APPLY],
    "azure": ["az identity federated-credential", "az identity federated-credential", *APPLY],
    "generic": [*APPLY[:1], "kubectl apply k8s/serviceaccount.yaml", *APPLY[1:]],
}
# What --dry-run on a fresh remote side plans, can-i checks aside, in order.
DRY_RUN_PLAN = {
    "aws": ["aws iam create-role", "aws eks create-access-entry", "aws eks update-kubeconfig",
            "kubectl apply k8s/namespace.yaml", "kubectl apply k8s/role.yaml", "kubectl apply k8s/rolebinding.yaml",
            "aws eks describe-cluster"],
    "gcp": ["gcloud projects add-iam-policy-binding", "env KUBECONFIG=x gcloud",
            "kubectl apply k8s/namespace.yaml", "kubectl apply k8s/role.yaml", "kubectl apply k8s/rolebinding.yaml",
            "gcloud container clusters"],
    "azure": ["az identity federated-credential", "az identity federated-credential", "az aks get-credentials",
              "kubelogin convert-kubeconfig azurecli", "kubectl apply k8s/namespace.yaml", "kubectl apply k8s/role.yaml",
              "kubectl apply k8s/rolebinding.yaml", "az aks show"],
    "generic": ["kubectl apply k8s/namespace.yaml", "kubectl apply k8s/serviceaccount.yaml", "kubectl apply k8s/role.yaml",
                "kubectl apply k8s/rolebinding.yaml", "kubectl config view", "kubectl create token"],
}
KUBECTL_APPLIED = {
    "aws": ["namespace.yaml", "role.yaml", "rolebinding.yaml"],
    "gcp": ["namespace.yaml", "role.yaml", "rolebinding.yaml"],
    "azure": ["namespace.yaml", "role.yaml", "rolebinding.yaml"],
    "generic": ["namespace.yaml", "serviceaccount.yaml", "role.yaml", "rolebinding.yaml"],
}


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
    assert len(can_i) == sum(len(r["verbs"]) for r in role_rules(s.project))
    assert "would run: " in done.stdout and "would write: airflow_settings.yaml, connection.env" in done.stdout


def role_rules(project: Path) -> list[dict]:
    return yaml.safe_load((project / "k8s" / "role.yaml").read_text())["rules"]


@pytest.mark.parametrize("cloud", CONFIG["cloud"])
def test_first_run_sets_up_verifies_and_connects(setup, cloud):
    s = setup(cloud)
    done = s.run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert [words(c) for c in s.double.changes()] == FIRST_RUN_CHANGES[cloud]
    table = [line.split() for line in done.stdout.splitlines() if line.endswith(("PASS", "FAIL"))]
    assert len(table) == sum(len(r["verbs"]) for r in role_rules(s.project))
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


def test_aws_trust_policy_drift_is_put_back(setup):
    s = setup("aws")
    assert s.run().returncode == 0
    state = s.double.state
    state["aws"]["roles"][ROLE]["Statement"][0]["Principal"]["AWS"] = "arn:aws:iam::999999999999:root"
    s.double.state_file.write_text(__import__("json").dumps(state))
    s.double.reset_log()
    assert s.run().returncode == 0
    assert [words(c) for c in s.double.changes()] == ["aws iam update-assume-role-policy"]


def test_aws_missing_cluster_is_created_only_when_asked(setup):
    s = setup("aws", state={})
    done = s.run()
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ERROR: cluster {CONFIG['cluster_name']} not found in {CONFIG['aws_region']}; check --region/credentials, "
        "or run again with --create-cluster to create it from aws/cluster.yaml")
    assert [words(c) for c in s.double.changes()] == ["aws iam create-role"]
    s.double.reset_log()
    done = s.run("--create-cluster")
    assert done.returncode == 0, done.stdout + done.stderr
    # The role exists before eksctl maps it; eksctl makes the access entry itself.
    assert [words(c) for c in s.double.changes()][:1] == ["eksctl create cluster"]
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
    assert done.stderr.strip() == "ERROR: --force: unknown option; allowed: --dry-run, --help and the options listed by --help"


@pytest.mark.parametrize("cloud", CONFIG["cloud"])
def test_help_names_every_option(setup, cloud):
    s = setup(cloud)
    done = subprocess.run(["scripts/setup_remote.sh", "--help"], cwd=s.project, capture_output=True, text=True)
    assert done.returncode == 0
    assert "--dry-run" in done.stdout
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
