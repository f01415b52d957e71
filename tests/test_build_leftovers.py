"""A render carries no bytecode or tool caches of the template tree into a project.

On a user's machine Python writes bytecode (PYTHONDONTWRITEBYTECODE unset): running the tests,
the hooks or anything else in a template checkout leaves ``__pycache__/*.pyc`` (and tool caches)
beside the template's files, and cookiecutter copies whatever the folder holds. Here a template
copy is seeded with such leftovers everywhere a render or an add reads from, then a project is
rendered and a cluster added with bytecode writing on, as on a user's machine: the project holds
none of them, and none of its own (the hooks import the project's modules).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_harness import add_cluster

ROOT = Path(__file__).resolve().parent.parent

LEFTOVERS = {  # where a template checkout gets them: pytest, ruff, imports of the project's modules
    "{{cookiecutter.project_slug}}/include/__pycache__/remote_pod.cpython-311.pyc": b"\xa7\r\r\n\x00\x00binary",
    "{{cookiecutter.project_slug}}/scripts/write_connection.pyc": b"\xa7\r\r\n\x00\x00binary",
    "{{cookiecutter.project_slug}}/.pytest_cache/v/cache/nodeids": b"[]",
    "{{cookiecutter.project_slug}}/tests/.ruff_cache/CACHEDIR.TAG": b"Signature",
    "cluster/files/clusters/__pycache__/manage.cpython-311.pyc": b"\xa7\r\r\n\x00\x00binary",
    "cluster/files/dags/__pycache__/remote_kpo_clusters.cpython-311.pyc": b"\xa7\r\r\n\x00\x00binary",
}
LEFTOVER_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"}


def leftovers(project: Path) -> list[str]:
    return sorted(p.relative_to(project).as_posix() for p in project.rglob("*")
                  if LEFTOVER_PARTS & set(p.relative_to(project).parts) or p.suffix in (".pyc", ".pyo"))


def template_copy(target: Path) -> Path:
    """The template as a clone holds it (no .git needed: the mutation script's copies have none)."""
    import shutil

    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".git", ".venv*", "out", "__pycache__", "*.pyc",
                                                                ".pytest_cache", ".ruff_cache", ".hypothesis"))
    return target


@pytest.fixture
def writes_bytecode(monkeypatch):
    """As on a user's machine: Python writes bytecode (this machine's environment turns it off)."""
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def test_a_render_and_an_add_leave_no_bytecode_or_caches(tmp_path, writes_bytecode):
    template = template_copy(tmp_path / "template")
    for rel, data in LEFTOVERS.items():
        (template / rel).parent.mkdir(parents=True, exist_ok=True)
        (template / rel).write_bytes(data)
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    done = subprocess.run([str(cookiecutter), "--no-input", "-o", str(tmp_path / "out"), str(template), "cloud=gcp"],
                          env=writes_bytecode, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "out" / "remote_kpo"
    assert leftovers(project) == [], "the render carried leftovers"
    for path in (p for p in project.rglob("*") if p.is_file()):
        path.read_text(encoding="utf-8")  # every file a text file: nothing binary came along
    add_cluster(project, template, {"cluster_id": "eks-batch", "cloud": "aws", "xcom": True})
    assert (project / "clusters" / "eks_batch" / "cluster.json").is_file()
    assert leftovers(project) == [], "the add carried leftovers"


def test_the_seeded_leftovers_do_reach_a_render_without_the_hooks_pruning(tmp_path, writes_bytecode):
    """The seeding above is real: cookiecutter itself copies such files (the hooks are what drop them)."""
    template = template_copy(tmp_path / "template")
    rel = "{{cookiecutter.project_slug}}/include/__pycache__/remote_pod.cpython-311.pyc"
    (template / rel).parent.mkdir(parents=True)
    (template / rel).write_bytes(LEFTOVERS[rel])
    (template / "hooks" / "post_gen_project.py").write_text("")
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    done = subprocess.run([str(cookiecutter), "--no-input", "-o", str(tmp_path / "out"), str(template), "cloud=gcp"],
                          env=writes_bytecode, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "include/__pycache__/remote_pod.cpython-311.pyc" in leftovers(tmp_path / "out" / "remote_kpo")
