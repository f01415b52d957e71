"""Prune what the chosen options do not use, write the example connection, print next steps.

What belongs to which cloud is one mapping, ``_clouds`` in cookiecutter.json: a file listed
for another cloud and not for the chosen one is removed. A fifth cloud is one more entry.
"""

from __future__ import annotations

import json
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


def remove_empty_dirs(project: Path) -> None:
    """Folders whose files were all optional (conditional file names) go too."""
    for folder in sorted((p for p in project.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def main(answers: dict, project: Path) -> int:
    cloud = answers["cloud"]
    prune(project, paths_to_prune(answers["_clouds"], cloud))
    if answers["pod_operator"] == "native":
        prune(project, set(answers["_clouds"][cloud]["native"]["prune"]))
    remove_empty_dirs(project)
    # The example connection comes from the project's own script, so its shape lives in one
    # place (include/remote_cluster.py). Offline: --placeholder asks no CLI.
    subprocess.run([sys.executable, "scripts/write_connection.py", "--placeholder"], cwd=project, check=True)
    # On stderr: `cruft diff > patch` renders the template too and must get the patch alone.
    say = partial(print, file=sys.stderr)
    say(f"\nCreated {project.name} for {answers['_clouds'][cloud]['label']}. Next steps:")
    say(f"  cd {project.name}")
    for n, line in enumerate(answers["_clouds"][cloud]["next_steps"], 1):
        say(f"  {n}. {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r'''{{ cookiecutter | tojson }}'''), Path.cwd()))
