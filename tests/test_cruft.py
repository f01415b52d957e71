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


def tree(root: Path, under: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / under).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def test_update_keeps_added_clusters_and_manage_update_brings_the_change_to_them(template, tmp_path):
    """A generic project with an EKS cluster added by the add command: `cruft update` applies a
    template change to the project and leaves clusters/ and the managed blocks alone; then
    `clusters/manage.py update` brings the same change into the cluster's part."""
    # As in this repository: the template's .env is tracked although the project's .gitignore names it.
    sh("git", "add", "-f", "-A", cwd=template)
    sh("git", "commit", "-qm", "the project's ignored files too", cwd=template)
    out = tmp_path / "out"
    out.mkdir()
    project = create(template, out, cloud="generic", namespace="team-jobs")
    add = [str(Path(sys.executable).parent / "cookiecutter"), str(template), "--directory", "cluster", "--no-input",
           "cluster_id=eks-batch", "cloud=aws", "namespace=batch-jobs", "aws_account_id=345678901234"]
    sh(*add, cwd=project)
    assert "apache-airflow-providers-amazon" in (project / "requirements.txt").read_text(), "the add's sync block"
    commit(project, "added eks-batch")
    clusters_before = tree(project, "clusters")
    requirements_before = (project / "requirements.txt").read_text()

    change = "# template v2: a comment every cluster part gets\n"
    for rel in ("include/remote_pod.py", "requirements.txt"):
        path = template / "{{cookiecutter.project_slug}}" / rel
        path.write_text(path.read_text() + change if rel.endswith(".py") else change + path.read_text())
    new_commit = commit(template, "v2")

    sh(CRUFT, "update", "--skip-apply-ask", "--allow-untracked-files", cwd=project)
    assert json.loads((project / ".cruft.json").read_text())["commit"] == new_commit
    assert (project / "include/remote_pod.py").read_text().endswith(change)
    assert (project / "requirements.txt").read_text() == change + requirements_before, \
        "the template's change applied, the managed provider block kept"
    assert not list(project.rglob("*.rej"))
    assert tree(project, "clusters") == clusters_before, "cruft leaves the added clusters alone"
    names = sh(sys.executable, "-c", "import clusters; print(clusters.names())", cwd=project)
    assert names.stdout.strip() == "['gpu-cluster', 'eks-batch']"

    part = project / "clusters" / "eks_batch" / "include" / "remote_pod.py"
    assert not part.read_text().endswith(change)
    done = sh(sys.executable, "clusters/manage.py", "update", "--template", str(template), cwd=project)
    assert part.read_text().endswith(change), done.stdout + done.stderr
    changed = {rel for rel, data in tree(project, "clusters").items() if clusters_before.get(rel) != data}
    assert changed == {"clusters/eks_batch/include/remote_pod.py", "clusters/eks_batch/cluster.json"}, changed
    # Without --template it takes .cruft.json's template at its commit, the one cruft just applied.
    again = sh(sys.executable, "clusters/manage.py", "update", cwd=project)
    assert "nothing to change" in again.stderr, again.stdout + again.stderr
    assert sh(CRUFT, "check", cwd=project).returncode == 0
