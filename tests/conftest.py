"""Shared fixtures: the option matrix read from cookiecutter.json, and rendered projects.

Each combination is rendered once per session (pytest-cookies) and reused by every test.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / "cookiecutter.json").read_text())
SHARED_SCHEMAS = ROOT.parent / "shared" / "schemas"


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
for _case in OPTION_CASES:
    assert all(value in choices(key) for key, value in _case.items()), _case


def case_id(answers: dict) -> str:
    parts = [answers["cloud"], "xcom" if answers["xcom"] else "noxcom"]
    parts += ["native"] if answers.get("pod_operator") == "native" else []
    parts += ["gpu"] if answers.get("gpu_node_group") else []
    return "-".join(parts)


CASES = [pytest.param(a, id=case_id(a)) for a in MATRIX + OPTION_CASES]


def check_keys(extra: dict) -> dict:
    """cookiecutter ignores unknown keys silently; a typo here would test nothing."""
    unknown = set(extra) - set(CONFIG)
    assert not unknown, f"not in cookiecutter.json: {unknown}"
    return extra


class Project:
    def __init__(self, path: Path, answers: dict):
        self.path = path
        self.answers = {k: v for k, v in CONFIG.items() if not k.startswith("_")} | answers

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
    """Environment for running a rendered project under the real Airflow in this venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(project_path / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
        PYTHONPATH=str(project_path),
    )
    return env
