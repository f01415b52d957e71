"""Every rendered README reads right: headings on their own lines, no words glued or doubled by
Jinja joins, and every project path or script it names exists in that very project.

Rendered for every cloud × option variant (tests/golden_files.txt), with default and custom answers.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import CONFIG, CUSTOM, ROOT
from test_render import golden_lists, variant_answers

TEMPLATE_README = ROOT / "{{cookiecutter.project_slug}}" / "README.md"
# Where a path a README names can start: the folders and top-level files of a rendered project.
PROJECT_ROOTS = {".astro", "aws", "dags", "gcp", "include", "k8s", "plugins", "scripts", "tests", "Dockerfile",
                 "requirements.txt", "packages.txt", "airflow_settings.yaml", ".env", "pyproject.toml",
                 "docker-compose.override.yml", ".gitignore", ".dockerignore"}
# Written later, by the scripts the README tells you to run (or by you): not in a fresh render.
MADE_LATER = {"connection.env", "admin.kubeconfig", ".cruft.json"}
PATH_TOKEN = re.compile(r"(?:file://)?(?<![\w/.~$-])((?:\.?[A-Za-z_][\w.-]*)(?:/[\w.*<>{}-]+)*/?)")
VARIANTS = sorted(set(golden_lists()) - {"common"})


def words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]{3,}", text)}


def known_words(answers: dict) -> set[str]:
    """Every word the template's own text, its data and the answers can put into a README."""
    source = re.sub(r"{%.*?%}|{{.*?}}|{#.*?#}", " ", TEMPLATE_README.read_text(), flags=re.S)
    return words(source) | words(json.dumps(CONFIG)) | words(" ".join(map(str, answers.values())))


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


@pytest.fixture(params=[(v, c) for v in VARIANTS for c in (False, True)],
                ids=[f"{v}-{'custom' if c else 'defaults'}" for v in VARIANTS for c in (False, True)])
def readme(request, render):
    variant, custom = request.param
    project = render(variant_answers(variant, xcom=custom) | (CUSTOM if custom else {}))
    return project, (project.path / "README.md").read_text()


def test_headings_stand_on_their_own_lines(readme):
    _, text = readme
    glued = [(n, line) for n, line in prose(text) if re.search(r"\S\s*#{2,6} \w", line) and not line.startswith("#")]
    assert not glued, glued
    headings = [line for _, line in prose(text) if line.startswith("#")]
    assert headings[0].startswith("# ") and all(re.match(r"#{1,6} \S", h) for h in headings), headings
    lines = text.splitlines()
    for n, line in prose(text):
        if line.startswith("#") and n > 1:
            assert lines[n - 2].strip() == "", f"line {n} {line!r} needs a blank line before it"


def test_no_word_glued_or_doubled_by_a_jinja_join(readme):
    project, text = readme
    unknown = words(text) - known_words(project.answers)
    assert not unknown, f"words made by joining others (a missing space?): {sorted(unknown)}"
    doubled = [(n, m.group(0)) for n, line in prose(text) for m in re.finditer(r"\b(\w{2,})\s+\1\b", line, re.I)]
    assert not doubled, doubled


def test_every_path_and_script_it_names_exists(readme):
    project, text = readme
    code = re.findall(r"`([^`\n]+)`", text) + re.findall(r"```\w*\n(.*?)```", text, re.S)
    named = {m.group(1).rstrip("/") for snippet in code for m in PATH_TOKEN.finditer(snippet)}
    named = {p for p in named if p.split("/")[0] in PROJECT_ROOTS and p not in MADE_LATER}
    missing = sorted(p for p in named if not any(project.path.glob(p)))
    assert named, "the README names no project path at all?"
    assert not missing, f"named in README.md but not in this project: {missing}"


def test_the_checks_catch_what_they_look_for():
    """Each check above, fed the defect it exists for, objects (so none passes vacuously)."""
    assert re.search(r"\S\s*#{2,6} \w", "trigger `remote_kpo`.## Deploy")
    answers = {k: v for k, v in CONFIG.items() if not k.startswith("_")}
    assert "connectioninto" in words("writes the aws connectioninto x") - known_words(answers)
    assert re.search(r"\b(\w{2,})\s+\1\b", "the remote cluster cluster", re.I)
    assert [m.group(1) for m in PATH_TOKEN.finditer("python3 scripts/write_connection.py --kubeconfig x")] == [
        "python3", "scripts/write_connection.py", "x"]
