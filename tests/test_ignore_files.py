"""The rendered project's .gitignore and .dockerignore keep out credentials by their real names
and folders, and nothing else: ordinary data, JSON and CA bundles reach git and the image.

Both sides are judged by the tools themselves: `git check-ignore` in a `git init` of the render,
and the docker SDK's own .dockerignore matcher (`docker.utils.build.exclude_paths`, read the way
`docker.api.build` reads the file). Renders: every cloud in cookiecutter.json with the default
and with custom answers, plus the cloud-only options. The project's own credential scan
(tests/test_no_credentials.py of the render) is checked here too: it reads the image's files
as Docker would pick them, and fails on a key saved under an ordinary name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CUSTOM, OPTION_CASES, choices, params
from docker.utils.build import exclude_paths

CASES = params([{"cloud": cloud, "xcom": True} for cloud in choices("cloud")]
               + [{"cloud": cloud, "xcom": False, **CUSTOM} for cloud in choices("cloud")]
               + OPTION_CASES)

# Every credential file the project writes or tells its user to create, by its real name and
# folder (and the same names deeper down, where a copy may land).
CREDENTIAL_PATHS = [
    ".env",  # AWS_PROFILE, AAD_SERVICE_PRINCIPAL_CLIENT_SECRET, ... (README, Run locally)
    "airflow_settings.yaml",  # scripts/write_connection.py: the local connection (a token on generic)
    "connection.env",  # scripts/write_connection.py: the deployment's connection
    "include/.env", "dags/connection.env", "include/airflow_settings.yaml",
    "kubeconfig", "admin.kubeconfig", "include/prod.kubeconfig",  # --kubeconfig PATH kept in the project
    ".kube/config", ".kube/cache/kpo-eks/0f1e.json", ".kube/cache/kubelogin/AzurePublicCloud.json",
    ".aws/credentials", ".aws/config", ".aws/sso/cache/0a1b.json",  # docker-compose.override.yml mounts ~/.aws
    ".azure/msal_token_cache.json", ".azure/azureProfile.json",  # az login
    ".config/gcloud/application_default_credentials.json", ".config/gcloud/credentials.db",  # gcloud, mounted too
    "application_default_credentials.json", "include/application_default_credentials.json",
]
# Ordinary files a project holds, which the old broad patterns (*key*.json, **/*credentials*.json,
# **/*.crt, **/*.pem, **/token, **/.config) hid from the image while `astro dev start` saw them.
ORDINARY_PATHS = [
    "include/data/keywords.json", "include/data/monkey_keys.json", "include/certs/corp-ca.crt",
    "include/certs/ca-bundle.pem", "dags/config/service_credentials_schema.json", "include/nlp/token",
    "include/nlp/vocab.token", "include/.config/settings.yaml", "include/data/events.env.csv",
    ".env.example", "include/kubeconfig_template.md",
]
LOCAL_ONLY = {"docker-compose.override.yml"}  # a project file the image does not need (local mounts)


@pytest.fixture(params=CASES)
def tree(request, render, tmp_path) -> Path:
    """A copy of the render with every listed credential and ordinary path created in it."""
    root = tmp_path / "project"
    shutil.copytree(render(request.param).path, root)
    for rel in CREDENTIAL_PATHS + ORDINARY_PATHS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (root / rel).exists():
            (root / rel).write_text("x\n")
    return root


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def git_kept(root: Path) -> set[str]:
    """The files real git does not ignore there (`git check-ignore` on every file)."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    paths = sorted(files_of(root) - {p for p in files_of(root) if p.startswith(".git/")})
    done = subprocess.run(["git", "check-ignore", "--verbose", "--non-matching", "--stdin"], cwd=root,
                          input="\n".join(paths) + "\n", capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return {line.split("\t", 1)[1] for line in done.stdout.splitlines() if line.startswith("::")}


def dockerignore(root: Path) -> list[str]:
    """The patterns, read as docker.api.build reads .dockerignore."""
    lines = (root / ".dockerignore").read_text().splitlines()
    return [line for line in (raw.strip() for raw in lines) if line and line[0] != "#"]


def docker_kept(root: Path, extra: list[str] = ()) -> set[str]:
    """The files the docker SDK would put into the build context (it lists folders too)."""
    return {p for p in exclude_paths(str(root), dockerignore(root) + list(extra)) if (root / p).is_file()}


def test_credentials_stay_out_of_git(tree):
    kept = git_kept(tree)
    assert sorted(kept & set(CREDENTIAL_PATHS)) == []


def test_credentials_stay_out_of_the_image(tree):
    kept = docker_kept(tree)
    assert sorted(kept & set(CREDENTIAL_PATHS)) == []


def test_ordinary_and_project_files_reach_git(tree):
    everything = files_of(tree) - set(CREDENTIAL_PATHS)
    assert sorted(everything - git_kept(tree)) == []


def test_ordinary_and_project_files_reach_the_image(tree):
    everything = files_of(tree) - set(CREDENTIAL_PATHS) - LOCAL_ONLY
    assert sorted(everything - docker_kept(tree)) == []
    if (tree / "docker-compose.override.yml").exists():
        assert "docker-compose.override.yml" not in docker_kept(tree)


def project_check(root: Path):
    """The render's own tests/test_no_credentials.py, imported (it is plain Python)."""
    spec = importlib.util.spec_from_file_location(f"no_credentials_{abs(hash(root))}", root / "tests/test_no_credentials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# .dockerignore lines a user may add, in the shapes Docker allows: exceptions, **, ?, classes.
EXTRA_PATTERNS = [
    pytest.param([], id="as-rendered"),
    pytest.param(["include/certs", "!include/certs/corp-ca.crt"], id="exception"),
    pytest.param(["**/*.json", "!dags/**"], id="double-star"),
    pytest.param(["include/nlp/?oken", "include/[d]ata/*.csv"], id="one-char-and-class"),
    pytest.param(["./tests", "/plugins/"], id="dot-and-slash"),
]


@pytest.mark.parametrize("extra", EXTRA_PATTERNS)
def test_the_projects_matcher_agrees_with_docker(tree, extra):
    with (tree / ".dockerignore").open("a") as handle:
        handle.write("".join(f"{line}\n" for line in extra))
    assert set(project_check(tree).image_files(tree)) == docker_kept(tree)


def run_project_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_no_credentials.py"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})


def test_the_project_warns_about_a_key_under_an_ordinary_name(tree):
    """Credential files named in .dockerignore are not read; the same content elsewhere fails the
    project's own tests, naming the file, what it looks like and the fix."""
    sa_key = json.dumps({"type": "service_account", "private_key": "".join(["-----BEGIN ", "PRIVATE KEY-----\n"])})
    for rel in ("connection.env", ".config/gcloud/application_default_credentials.json", ".aws/credentials"):
        (tree / rel).write_text(sa_key)
    clean = run_project_check(tree)  # also compiles the project's .pyc files, which it then reads
    assert clean.returncode == 0, clean.stdout[-3000:]
    (tree / "include/data/keywords.json").write_text(sa_key)
    warned = run_project_check(tree)
    assert warned.returncode == 1, warned.stdout[-3000:]
    named = re.findall(r"^E\s+(\S+): looks like (.*)$", warned.stdout, re.M)
    assert named == [("include/data/keywords.json",
                      "a Google service-account key (JSON, type service_account, with a private_key)")]
    assert "Move it out of the project" in warned.stdout
