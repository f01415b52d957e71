"""The recording CLI stand-in (tests/cloud_cli_double) says no where the real CLIs would.

tests/test_setup_scripts.py trusts it to refuse calls it does not model, to answer
`kubectl auth can-i` from the RBAC actually applied, and to report missing resources; each rule
is shown here refusing, next to a positive control.
"""

from __future__ import annotations

import os
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


@pytest.fixture
def cli(tmp_path):
    double = CliDouble(tmp_path / "double", {"aws": {"clusters": {"known": {"region": "eu-west-1", "mode": "API",
                                                                            "endpoint": "https://x.example"}}}})

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
    for verb, resource, group, namespace in [("delete", "pods", "runners", "jobs"), ("create", "pods/exec", "runners", "jobs"),
                                             ("create", "pods", "strangers", "jobs"), ("create", "pods", "runners", "other")]:
        denied = cli("kubectl", "auth", "can-i", verb, resource, "--namespace", namespace, "--as", "u", "--as-group", group)
        assert denied.returncode == 1 and denied.stdout.strip() == "no", (verb, resource, group, namespace)


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
