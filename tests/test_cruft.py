"""Template updates with cruft: create, check, update, diff and link work on this template.

Real cruft and git, on a throwaway git copy of this working tree (so uncommitted template
changes are what is tested). Nothing here is simulated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

CRUFT = str(Path(sys.executable).parent / "cruft")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": "/dev/null"}


def sh(*cmd: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, **GIT_ENV), timeout=300)
    if ok:
        assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done


def commit(repo: Path, message: str) -> str:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", message, cwd=repo)
    return sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()


@pytest.fixture
def template(tmp_path) -> Path:
    """A git repository holding this working tree's template files."""
    repo = tmp_path / "template"
    listed = sh("git", "ls-files", "-co", "--exclude-standard", cwd=ROOT).stdout.splitlines()
    for rel in listed:
        if (ROOT / rel).is_file() and not rel.startswith(("out/", ".venv")):
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    commit(repo, "template")
    return repo


def create(template: Path, out: Path, **answers) -> Path:
    created = sh(CRUFT, "create", str(template), "--no-input", "--output-dir", str(out),
                 "--extra-context", json.dumps(answers), cwd=out.parent)
    assert created.stderr.count("Next steps") == 1, created.stderr
    project = out / "remote_kpo"
    sh("git", "init", "-q", cwd=project)
    commit(project, "rendered")
    return project


def test_create_records_answers_and_update_applies_later_template_changes(template, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    project = create(template, out, cloud="gcp", namespace="gpu-jobs")
    recorded = json.loads((project / ".cruft.json").read_text())
    assert recorded["template"] == str(template)
    assert recorded["context"]["cookiecutter"]["cloud"] == "gcp"
    assert recorded["context"]["cookiecutter"]["namespace"] == "gpu-jobs"
    assert sh(CRUFT, "check", cwd=project).returncode == 0

    # The template moves on: a README change, and a new filter in local_extensions.py used by
    # the README (cruft renders old and new commits in one process; the shim must load the new one).
    readme = template / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(readme.read_text() + "\nNamespace in capitals: {{ cookiecutter.namespace | shout }}\n")
    ext = template / "local_extensions.py"
    ext.write_text(ext.read_text().replace(
        '    environment.filters["refuse_bad_answers"] = refuse_bad_answers\n',
        '    environment.filters["refuse_bad_answers"] = refuse_bad_answers\n'
        '    environment.filters["shout"] = lambda v: str(v).upper()\n'))
    env_file = template / "{{cookiecutter.project_slug}}" / ".env"
    env_file.write_text(env_file.read_text() + "# a template change to a file that holds local settings\n")
    commit(template, "README shows the namespace")

    (project / ".env").write_text("LOCAL_ONLY_SETTING=never-in-a-diff\n")
    assert sh(CRUFT, "check", cwd=project, ok=False).returncode == 1
    # As the rendered README says: plain `cruft diff` compares with the commit rendered from
    # (no local change: empty), `--checkout main` with the template's newest version.
    assert "Namespace in capitals" not in sh(CRUFT, "diff", cwd=project).stdout
    diff = sh(CRUFT, "diff", "--checkout", "main", cwd=project)
    assert "Namespace in capitals: GPU-JOBS" in diff.stdout
    assert "never-in-a-diff" not in diff.stdout, "pyproject.toml [tool.cruft] skip keeps local files out"
    assert not diff.stdout.lstrip().startswith("Created"), "the hook's next steps go to stderr"

    update = sh(CRUFT, "update", "-y", cwd=project)
    assert "Next steps" not in update.stdout + update.stderr, "first-render next steps are not for an update"
    assert "Namespace in capitals: GPU-JOBS" in (project / "README.md").read_text()
    assert (project / ".env").read_text() == "LOCAL_ONLY_SETTING=never-in-a-diff\n"
    assert not list(project.rglob("*.rej"))
    assert sh(CRUFT, "check", cwd=project).returncode == 0


def test_a_plain_cookiecutter_project_can_be_linked(template, tmp_path):
    out = tmp_path / "plain"
    sh(str(Path(sys.executable).parent / "cookiecutter"), "--no-input", "--output-dir", str(out), str(template),
       "cloud=generic", cwd=tmp_path)
    project = out / "remote_kpo"
    sh("git", "init", "-q", cwd=project)
    commit(project, "rendered")
    rendered_from = sh("git", "rev-parse", "HEAD", cwd=template).stdout.strip()
    sh(CRUFT, "link", str(template), "--no-input", "--checkout", rendered_from,
       "--extra-context", json.dumps({"cloud": "generic"}), cwd=project)
    assert json.loads((project / ".cruft.json").read_text())["commit"] == rendered_from
    assert sh(CRUFT, "diff", cwd=project).stdout.strip() == ""
    assert sh(CRUFT, "check", cwd=project).returncode == 0


def test_bad_answers_are_refused_by_cruft_too(template, tmp_path):
    done = sh(CRUFT, "create", str(template), "--no-input", "--output-dir", str(tmp_path / "bad"),
              "--extra-context", json.dumps({"namespace": "kube-system"}), cwd=tmp_path, ok=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("ERROR: namespace:")
    assert not (tmp_path / "bad" / "remote_kpo").exists()
