"""The recording Astro CLI stand-in (tests/astro_cli_double) says no where the real CLI would.

tests/test_deploy_script.py trusts it to refuse calls it does not model, to keep secrets
unreadable, to refuse creating what exists, to upsert only with `update`, and to refuse every
call when signed out; each rule is shown here refusing, next to a positive control.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from astro_cli_double import DEPLOYMENT_ID, AstroDouble, signed_in

LOAD = ["--deployment-id", DEPLOYMENT_ID, "--load", "--env", "vars.env", "--secret"]


@pytest.fixture
def astro(tmp_path):
    double = AstroDouble(tmp_path / "double", signed_in())

    def run(*argv: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["astro", *argv], capture_output=True, text=True, cwd=tmp_path,
                              env=dict(double.env(dict(os.environ)), **env), timeout=60)

    (tmp_path / "vars.env").write_text("# a comment\n\nAIRFLOW_CONN_X='{\"conn_type\":\"kubernetes\"}'\n")
    run.double, run.folder = double, tmp_path  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize("argv", [["dev", "start"], ["deployment", "variable", "delete"], ["deployment", "list"],
                                  ["deploy", DEPLOYMENT_ID, "--force"], ["deploy"],
                                  ["deployment", "variable", "update", "--deployment-id", DEPLOYMENT_ID, "X=1"],
                                  ["deployment", "pool", "list"]])
def test_a_call_it_does_not_model_fails_with_97(astro, argv):
    done = astro(*argv)
    assert done.returncode == 97 and "not simulated" in done.stderr, done.stderr
    assert astro.double.changes() == []


def test_create_refuses_an_existing_key_update_upserts(astro):
    assert astro("deployment", "variable", "create", *LOAD).returncode == 0  # positive control: a new key
    again = astro("deployment", "variable", "create", *LOAD)
    assert again.returncode == 1 and "already set on the Deployment; use the update command" in again.stderr
    held = astro.double.state["deployments"][DEPLOYMENT_ID]["variables"]
    assert held == {"AIRFLOW_CONN_X": {"value": '{"conn_type":"kubernetes"}', "secret": True}}, "quotes trimmed as the CLI does"
    (astro.folder / "vars.env").write_text("AIRFLOW_CONN_X=other\nAIRFLOW_CONN_Y=new\n")
    assert astro("deployment", "variable", "update", *LOAD[:-1]).returncode == 0
    held = astro.double.state["deployments"][DEPLOYMENT_ID]["variables"]
    assert held["AIRFLOW_CONN_X"] == {"value": "other", "secret": True}, "a secret stays secret without --secret"
    assert held["AIRFLOW_CONN_Y"] == {"value": "new", "secret": False}


def test_setting_the_same_value_again_is_no_change(astro):
    assert astro("deployment", "variable", "update", *LOAD).returncode == 0
    assert astro("deployment", "variable", "update", *LOAD).returncode == 0
    assert [c["changed"] for c in astro.double.calls()] == [True, False]


def test_a_secret_value_is_never_listed(astro):
    (astro.folder / "plain.env").write_text("PLAIN=visible\n")
    assert astro("deployment", "variable", "update", "--deployment-id", DEPLOYMENT_ID, "--load", "--env",
                 "plain.env").returncode == 0
    assert astro("deployment", "variable", "update", *LOAD).returncode == 0
    listed = astro("deployment", "variable", "list", "--deployment-id", DEPLOYMENT_ID).stdout
    assert "visible" in listed, "positive control: a plain value is shown"
    assert "conn_type" not in listed and "****" in listed
    assert [line.split()[1:] for line in listed.splitlines()[1:]] == [["PLAIN", "visible", "false"],
                                                                     ["AIRFLOW_CONN_X", "****", "true"]]


def test_a_bad_env_file_is_refused(astro):
    (astro.folder / "bad.env").write_text("A=1\nA=2\nB=\n")
    done = astro("deployment", "variable", "update", "--deployment-id", DEPLOYMENT_ID, "--load", "--env", "bad.env")
    assert done.returncode == 1 and "A: declared twice in the file" in done.stderr and "B: blank value" in done.stderr


def test_pools_create_only_the_missing_update_only_the_existing(astro):
    pool = ["--deployment-id", DEPLOYMENT_ID, "--name", "jobs", "--slots", "4"]
    missing = astro("deployment", "pool", "update", *pool)
    assert missing.returncode == 1 and "(404)" in missing.stderr
    assert astro("deployment", "pool", "create", *pool).returncode == 0  # positive control
    exists = astro("deployment", "pool", "create", *pool)
    assert exists.returncode == 1 and "(409)" in exists.stderr
    assert astro("deployment", "pool", "update", *pool[:-1], "8").returncode == 0
    listed = astro("deployment", "pool", "list", "--deployment-id", DEPLOYMENT_ID).stdout.splitlines()
    assert [line.split() for line in listed] == [["NAME", "SLOTS"], ["default_pool", "128"], ["jobs", "8"]]


def test_signed_out_every_call_but_version_fails(astro):
    astro.double.state = {**astro.double.state, "logged_in": False, "api_tokens": ["good"]}
    assert astro("version").returncode == 0
    inspect = ["deployment", "inspect", "--deployment-id", DEPLOYMENT_ID, "--key", "metadata.webserver_url"]
    for argv in (inspect, ["deployment", "variable", "update", *LOAD], ["deploy", DEPLOYMENT_ID]):
        done = astro(*argv)
        assert done.returncode == 1 and "no context set, have you authenticated to Astro" in done.stderr, argv
    assert astro(*inspect, ASTRO_API_TOKEN="wrong").returncode == 1
    assert astro(*inspect, ASTRO_API_TOKEN="good").returncode == 0, "positive control: a valid API token"
    assert astro.double.changes() == []


def test_an_unknown_deployment_is_not_found(astro):
    found = astro("deployment", "inspect", "--deployment-id", DEPLOYMENT_ID, "--key", "metadata.webserver_url")
    assert found.returncode == 0 and found.stdout.strip() == "example-org.astronomer.run/d0remotekpo"  # positive control
    other = astro("deployment", "pool", "list", "--deployment-id", "clx0other")
    assert other.returncode == 1 and "the Deployment specified was not found" in other.stderr


def test_deploy_needs_an_astro_project_and_records_the_code(astro):
    outside = astro("deploy", DEPLOYMENT_ID)
    assert outside.returncode == 1 and "not an Astro project directory" in outside.stderr
    project: Path = astro.folder
    (project / ".astro").mkdir()
    (project / ".astro" / "config.yaml").write_text("project:\n  name: x\n")
    (project / "dags").mkdir()
    (project / "dags" / "a.py").write_text("x = 1\n")
    assert astro("deploy", DEPLOYMENT_ID).returncode == 0
    assert astro("deploy", DEPLOYMENT_ID).returncode == 0, "the same code again"
    (project / "dags" / "a.py").write_text("x = 2\n")
    assert astro("deploy", DEPLOYMENT_ID).returncode == 0
    assert [c["changed"] for c in astro.double.calls() if c["argv"][1] == "deploy"] == [False, True, False, True]
    assert len(astro.double.state["deployments"][DEPLOYMENT_ID]["deploys"]) == 2
