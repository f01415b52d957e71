"""Least privilege and hygiene, shown by tools we did not write: checkov, parliament,
shellcheck and detect-secrets, plus the Role compared with the operator's needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402  (the same installer the README's command uses)

# What KubernetesPodOperator (cncf-kubernetes 10.25) calls, per ../shared/FACTS.md.
ALWAYS = {("pods", "create"), ("pods", "get"), ("pods", "list"), ("pods", "patch"), ("pods", "delete"),
          ("pods/log", "get"), ("events", "list"), ("events", "watch")}  # watch: k8s/role.yaml says why
WITH_XCOM = {("pods/exec", "get"), ("pods/exec", "create")}


@pytest.fixture(scope="session")
def checkov() -> str:
    """checkov pins an old boto3, so it lives in a virtualenv of its own."""
    env = ROOT / ".venv-checkov"
    dev.ensure_env(env, ROOT / "requirements" / "checkov.lock")
    return dev.bin_of(env, "checkov")


def test_role_equals_the_operator_needs(project):
    role = yaml.safe_load((project.path / "k8s/role.yaml").read_text())
    assert role["kind"] == "Role", "never cluster scope"
    granted = set()
    # The one rule limited by name: the preflight reads the namespace's quota and LimitRange.
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert named == [{"apiGroups": [""], "resources": ["limitranges", "resourcequotas"],
                      "resourceNames": [role["metadata"]["name"]], "verbs": ["get"]}]
    for rule in (rule for rule in role["rules"] if "resourceNames" not in rule):
        assert rule["apiGroups"] == [""], rule
        assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames tricks or non-resource URLs"
        granted |= {(r, v) for r in rule["resources"] for v in rule["verbs"]}
    expected = ALWAYS | (WITH_XCOM if project.answers["xcom"] else set())
    assert granted == expected
    binding = yaml.safe_load((project.path / "k8s/rolebinding.yaml").read_text())
    assert binding["kind"] == "RoleBinding" and binding["roleRef"]["kind"] == "Role"
    assert len(binding["subjects"]) == 1


def test_checkov_finds_nothing_unexplained(project, checkov):
    done = subprocess.run([checkov, "--skip-download", "--compact", "--output", "json",
                           "--framework", "dockerfile", "kubernetes", "--directory", str(project.path)],
                          capture_output=True, text=True)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [c["check_id"] for r in reports for c in r["results"]["failed_checks"]]
    assert failed == [], failed
    for report in reports:
        for skipped in report["results"]["skipped_checks"]:
            reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
            assert len(reason.strip()) > 20, f"{skipped['check_id']} skipped without a reason"
    assert sum(r["summary"]["passed"] for r in reports) > 10


@pytest.mark.parametrize("options", [{}, {"pod_operator": "native"}, {"gpu_node_group": True},
                                     {"pod_operator": "native", "gpu_node_group": True}],
                         ids=["default", "native", "gpu", "native-gpu"])
def test_aws_permission_policies_pass_parliament(render, options):
    from parliament import analyze_policy_string

    project = render({"cloud": "aws", "xcom": True, **options})
    policies = [json.loads(p.read_text()) for p in sorted((project.path / "aws").glob("*.json"))]
    permission = [p for p in policies if "Version" in p and any("Resource" in s for s in p["Statement"])]
    if not options:  # the kubeconfig path: presigning STS GetCallerIdentity needs no permission at all
        assert permission == []
        return
    (policy,) = permission
    assert analyze_policy_string(json.dumps(policy)).findings == []
    cluster = project.answers["cluster_name"]
    granted = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "*" not in statement["Resource"].split(":")[-1].split("/")[0]
        for action in [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]:
            granted[action] = statement["Resource"]
    assert granted.pop("eks:DescribeCluster").endswith(f":cluster/{cluster}")
    if options.get("gpu_node_group"):
        assert granted.pop("eks:CreateNodegroup").endswith(f":cluster/{cluster}")
        for action in ("eks:DescribeNodegroup", "eks:DeleteNodegroup", "eks:TagResource"):
            assert granted.pop(action).endswith(f":nodegroup/{cluster}/airflow-gpu-*/*"), action
        for action in ("iam:GetRole", "iam:PassRole"):
            assert granted.pop(action).endswith(":role/remote-kpo-gpu-node"), action
    assert granted == {}, "nothing beyond what the options need"


def test_parliament_would_catch_a_broad_policy():
    from parliament import analyze_policy_string

    broad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "eks:*", "Resource": "*"}]}
    assert analyze_policy_string(json.dumps(broad)).findings


def shell_scripts(path: Path) -> list[Path]:
    found = []
    for p in path.rglob("*"):
        shebang = p.is_file() and p.read_bytes()[:30].startswith(b"#!/usr/bin/env bash")
        if p.is_file() and (p.suffix == ".sh" or shebang):
            found.append(p)
    return found


def test_shellcheck_on_every_script(render):
    scripts = [ROOT / ".ci" / "run"]
    for cloud in ("aws", "gcp", "azure", "generic"):
        scripts += shell_scripts(render({"cloud": cloud, "xcom": True}).path)
    done = subprocess.run([str(BIN / "shellcheck"), "--severity", "style", *map(str, scripts)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def detect_secrets(path: Path) -> dict:
    done = subprocess.run([str(BIN / "detect-secrets"), "scan", "--all-files", "."],
                          capture_output=True, text=True, check=True, cwd=path)
    return json.loads(done.stdout)["results"]


def test_no_secret_in_any_rendered_project(project):
    assert detect_secrets(project.path) == {}


def test_secret_scanner_would_notice_one(tmp_path):
    (tmp_path / "leak.env").write_text("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8Qh3Yt5\n"
                                       "aws_access_key_id = AKIAZ7QXW3RT5YUIOP9L\n")
    assert detect_secrets(tmp_path)


# .gitignore and .dockerignore (credentials out by their real names, ordinary files in): tests/test_ignore_files.py.
