"""Prune what the chosen options do not use, write the example connection, print next steps
(only the pruning for a cluster part, ``_cluster_id`` set by the cluster/ template's add hook).

What belongs to which cloud is one mapping, ``_clouds`` in cookiecutter.json: a file listed
for another cloud and not for the chosen one is removed. A fifth cloud is one more entry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path


def paths_to_prune(clouds: dict, chosen: str) -> set[str]:
    keep = set(clouds[chosen]["paths"])
    return {p for name, c in clouds.items() if name != chosen for p in c["paths"]} - keep


def prune(project: Path, paths: set[str]) -> None:
    for rel in sorted(paths):
        target = project / rel
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


# What running anything in the template tree may leave there (bytecode where Python writes it,
# tool caches): cookiecutter copies whatever the folder holds, so a render drops these.
BUILD_LEFTOVER_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"}
BUILD_LEFTOVER_SUFFIXES = (".pyc", ".pyo")


def is_build_leftover(path: Path) -> bool:
    """In a leftover folder, or bytecode itself (the cluster/ template's add hook asks this too)."""
    return bool(BUILD_LEFTOVER_DIRS & set(path.parts)) or path.name.endswith(BUILD_LEFTOVER_SUFFIXES)


def remove_build_leftovers(project: Path) -> None:
    for path in sorted(project.rglob("*"), key=lambda p: len(p.parts)):
        if not (path.is_symlink() or path.exists()) or not is_build_leftover(path.relative_to(project)):
            continue  # already gone with its folder, or no leftover
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def remove_empty_dirs(project: Path) -> None:
    """Folders whose files were all optional (conditional file names) go too."""
    for folder in sorted((p for p in project.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def comparing_for_cruft() -> bool:
    """`cruft update` and `cruft diff` render the template (twice) into temporary folders only
    to compare them; first-render next steps there would be noise, printed twice."""
    try:
        parent = subprocess.run(["ps", "-o", "args=", "-p", str(os.getppid())], capture_output=True, text=True).stdout
    except OSError:
        return False
    words = parent.split()
    return any(Path(w).name == "cruft" for w in words) and bool({"update", "diff"} & set(words))


def main(answers: dict, project: Path) -> int:
    cloud = answers["cloud"]
    remove_build_leftovers(project)
    prune(project, paths_to_prune(answers["_clouds"], cloud))
    if answers["pod_operator"] == "native":
        prune(project, set(answers["_clouds"][cloud]["native"]["prune"]))
    remove_empty_dirs(project)
    if answers.get("_cluster_id"):
        # A cluster part (cluster/ template): its add hook writes the connection into the
        # project root and prints the next steps.
        return 0
    # The example connection comes from the project's own script, so its shape lives in one
    # place (include/remote_cluster.py). Offline: --placeholder asks no CLI.
    # -B: importing include/ must not leave bytecode in the new project.
    subprocess.run([sys.executable, "-B", "scripts/write_connection.py", "--placeholder"], cwd=project, check=True)
    if comparing_for_cruft():
        return 0
    # On stderr: `cruft diff > patch` must get the patch alone, wherever this hook runs.
    say = partial(print, file=sys.stderr)
    say(f"\nCreated {project.name} for {answers['_clouds'][cloud]['label']}. Next steps:")
    say(f"  cd {project.name}")
    for n, line in enumerate(answers["_clouds"][cloud]["next_steps"], 1):
        say(f"  {n}. {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r'''{{ cookiecutter | tojson }}'''), Path.cwd()))
