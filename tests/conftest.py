"""Shared fixtures: the option matrix read from cookiecutter.json, and rendered projects.

Each combination is rendered once per session (pytest-cookies) and reused by every test.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from image_closure import gated_env

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / "cookiecutter.json").read_text())


def choices(key: str) -> list:
    value = CONFIG[key]
    return [True, False] if isinstance(value, bool) else list(value)


# Every option that changes the output: the cloud choice and the xcom switch.
MATRIX_KEYS = ("cloud", "xcom")
MATRIX = [dict(zip(MATRIX_KEYS, combo, strict=True)) for combo in itertools.product(*(choices(k) for k in MATRIX_KEYS))]


# The options only some clouds offer, each rendered at least once (and together on AWS).
OPTION_CASES = [
    {"cloud": "aws", "xcom": False, "pod_operator": "native", "gpu_node_group": True},
    {"cloud": "aws", "xcom": True, "gpu_node_group": True},
    {"cloud": "gcp", "xcom": True, "pod_operator": "native"},
    {"cloud": "gcp", "xcom": False, "gpu_node_group": True},
]

# Users' own answers: a distinct, valid, non-default value for every free-text prompt. A template
# that hard-codes a default passes every test that renders defaults; these renders catch it
# (tests/test_render.py checks that no default value survives in them).
FREE_TEXT = [k for k, v in CONFIG.items() if not k.startswith("_") and isinstance(v, str)]
CUSTOM = {
    "project_name": "Nightly Batch",
    "project_slug": "ml_batch",  # not the one project_name derives: an explicit answer must win
    "cluster_name": "ml-prod-eu",
    "namespace": "team-ml",
    "kubernetes_conn_id": "ml_cluster",
    "aws_account_id": "210987654321",
    "aws_region": "eu-west-1",
    "aws_astro_workload_identity_arn": "arn:aws:iam::444455556666:role/astro-ml-prod",
    "gcp_project_id": "ml-platform-prod",
    "gcp_location": "europe-west4-a",
    "gcp_service_account_email": "astro-ml@ml-platform-prod.iam.gserviceaccount.com",
    "azure_subscription_id": "5b0c1a8e-3f2d-4c6b-9a7e-1d2c3b4a5f60",
    "azure_resource_group": "rg-ml-prod",
    "azure_tenant_id": "7e6d5c4b-3a29-4817-b6a5-f4e3d2c1b0a9",
    "azure_identity_client_id": "0f1e2d3c-4b5a-4697-8877-66554433aa22",
    "azure_identity_object_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
}
assert sorted(CUSTOM) == sorted(FREE_TEXT), "every free-text prompt needs a custom answer here"
# Per cloud, and per cloud-only option, once with the users' own answers.
CUSTOM_CASES = [
    {"cloud": "aws", "xcom": True, **CUSTOM},
    {"cloud": "gcp", "xcom": True, **CUSTOM},
    {"cloud": "azure", "xcom": False, **CUSTOM},
    {"cloud": "generic", "xcom": False, **CUSTOM},
    {"cloud": "aws", "xcom": False, "pod_operator": "native", "gpu_node_group": True, **CUSTOM},
    {"cloud": "gcp", "xcom": True, "pod_operator": "native", **CUSTOM},
    {"cloud": "gcp", "xcom": False, "gpu_node_group": True, **CUSTOM},
]
for _case in OPTION_CASES + CUSTOM_CASES:
    assert all(value in choices(key) for key, value in _case.items() if key not in FREE_TEXT), _case


def is_custom(answers: dict) -> bool:
    return any(key in answers for key in FREE_TEXT)


def case_id(answers: dict) -> str:
    parts = [answers["cloud"], "xcom" if answers["xcom"] else "noxcom"]
    parts += ["native"] if answers.get("pod_operator") == "native" else []
    parts += ["gpu"] if answers.get("gpu_node_group") else []
    parts += ["custom"] if is_custom(answers) else []
    return "-".join(parts)


def params(cases: list[dict]) -> list:
    return [pytest.param(a, id=case_id(a)) for a in cases]


CASES = params(MATRIX + OPTION_CASES + CUSTOM_CASES)
# The default and the custom AWS projects, for the tests that are about AWS only.
AWS_CASES = params([{"cloud": "aws", "xcom": True}, CUSTOM_CASES[0]])


def check_keys(extra: dict) -> dict:
    """cookiecutter ignores unknown keys silently; a typo here would test nothing."""
    unknown = set(extra) - set(CONFIG)
    assert not unknown, f"not in cookiecutter.json: {unknown}"
    return extra


class Project:
    def __init__(self, path: Path, answers: dict):
        self.path = path
        self.answers = {k: v for k, v in CONFIG.items() if not k.startswith("_")} | answers
        if "project_slug" not in answers:
            self.answers["project_slug"] = path.name

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="session")
def render(cookies_session):
    cache: dict[str, Project] = {}

    def _render(answers: dict) -> Project:
        key = json.dumps(answers, sort_keys=True)
        if key not in cache:
            result = cookies_session.bake(extra_context=check_keys(dict(answers)))
            assert result.exit_code == 0, result.exception
            cache[key] = Project(Path(result.project_path), answers)
        return cache[key]

    return _render


@pytest.fixture(params=CASES)
def project(request, render) -> Project:
    return render(request.param)


def airflow_env(project_path: Path, home: Path) -> dict:
    """Environment for running a rendered project under the real Airflow in this venv, seeing
    only the packages its image will hold (tests/image_closure.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(project_path / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
        PYTHONPATH=str(project_path),
    )
    return gated_env(env, project_path / "requirements.txt")
