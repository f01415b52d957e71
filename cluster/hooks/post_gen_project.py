"""Add the cluster to the project: render the main template for it, copy its part into
clusters/<package>/, record it in cluster.json, then let clusters/manage.py sync the shared files.

cwd is the work folder cookiecutter made in the project root (.add-cluster-<package>); the main
template is this template's parent folder. Only files whose content differs are written, so a
second add of the same cluster changes nothing, and one after a template update brings its
changes; a cluster file edited since it was written (hash differs from cluster.json) is kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import yaml

sys.dont_write_bytecode = True  # the project's modules loaded here leave no __pycache__ in it
say = partial(print, file=sys.stderr)  # like the main template's hook: stdout stays clean
# What of a render belongs to the cluster (folders whole, when the options kept them).
# How a deployment on another cloud reaches an added aws/gcp cluster.
FEDERATION = {"aws": "AWS: an IAM role it assumes through OIDC web identity",
              "gcp": "GCP: workload identity federation"}
PART = ["include", "k8s", "aws", "gcp", "scripts/setup_remote.sh", "scripts/write_connection.py"]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render(template: Path, answers: dict, slug: str, name: str, work: Path) -> Path:
    """The main template rendered for this cluster (its own hooks prune it), in ``work``."""
    from cookiecutter.main import cookiecutter

    cid, dashes = answers["cluster_id"], slug.replace("_", "-")
    context = {**{k: v for k, v in answers.items() if k != "cluster_id"}, "project_slug": slug, "project_name": name,
               "_cluster_id": cid, "__aws_role_name": f"{dashes}-{cid}-kpo-runner",
               "__aws_external_id": f"{dashes}-{cid}-remote-kpo", "__k8s_group": f"airflow-kpo-runners-{cid}",
               "__aws_gpu_node_role_name": f"{dashes}-{cid}-gpu-node"}
    config = work / "config.yaml"  # the user's cookiecutter config and replay file stay untouched
    config.write_text(json.dumps({"replay_dir": str(work / "replay"), "cookiecutters_dir": str(work / "cc")}))
    return Path(cookiecutter(str(template), no_input=True, extra_context=context, output_dir=str(work / "out"),
                             config_file=str(config)))


def wanted_files(part: Path, pkg: str, cloud: str) -> dict[str, Path]:
    """{project-relative path: rendered file}: the cluster's part, and its GPU DAG if it has one
    (the main template's hook already dropped build leftovers from the render)."""
    found = {}
    for rel in [*PART, f"scripts/setup/{cloud}.sh"]:
        source = part / rel
        for path in sorted(source.rglob("*")) if source.is_dir() else [source]:
            if path.is_file():
                found[f"clusters/{pkg}/{path.relative_to(part).as_posix()}"] = path
    if (part / "dags" / "remote_kpo_gpu.py").is_file():
        found[f"dags/remote_kpo_gpu_{pkg}.py"] = part / "dags" / "remote_kpo_gpu.py"
    return found


def needs(part: Path, config: dict, answers: dict) -> dict:
    """What the shared files must give this cluster: toolchain, provider lines, local credentials."""
    tool = config["_clouds"][answers["cloud"]]["toolchain"] if answers["pod_operator"] == "kubernetes" else None
    if tool:
        builder = re.search(r"^FROM (\S+) AS toolchain-amd64$", (part / "Dockerfile").read_text(), re.M).group(1)
        tool = {**tool, "builder": builder}
    requirements = [line for line in (part / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    env = part / ".env"  # a template copy made with `git add -A` lacks it (the project's .gitignore)
    local: dict = {"env": [line for line in (env.read_text() if env.exists() else "").splitlines()
                           if re.match(r"[A-Z_][A-Z0-9_]*=", line)]}
    compose = part / "docker-compose.override.yml"
    if compose.is_file():
        credentials = yaml.safe_load(compose.read_text())["x-cloud-credentials"]
        local |= {"volumes": credentials.get("volumes", []), "environment": credentials.get("environment", {})}
    return {"toolchain": tool, "requirements": requirements, "local": local}


def put(project: Path, rel: str, data: bytes, recorded: str | None, changed: list, kept: list, mode: int = 0o644):
    """Write one file if its content differs, unless it was edited since it was written."""
    target = project / rel
    current = target.read_bytes() if target.exists() else None
    if current == data:
        return
    if current is not None and sha(current) != recorded:
        kept.append(rel)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(mode)
    changed.append(rel)


def main(answers: dict) -> int:
    project, workdir = Path(answers["_output_dir"]), Path.cwd()
    template = Path(answers["_repo_dir"]).parent
    config = json.loads((template / "cookiecutter.json").read_text())
    rules = load(Path(answers["_repo_dir"]) / "hooks" / "pre_gen_project.py", "_kpo_cluster_rules")
    # Bytecode and tool caches that running anything in the template tree may leave: never copied.
    leftover = load(template / "hooks" / "post_gen_project.py", "_kpo_main_post_gen").is_build_leftover
    mine = rules.relevant(answers, config["_clouds"])
    cid, cloud, pkg = mine["cluster_id"], mine["cloud"], mine["cluster_id"].replace("-", "_")
    record_path = project / "clusters" / pkg / "cluster.json"
    before = json.loads(record_path.read_text()) if record_path.exists() else {"files": {}}
    changed: list[str] = []
    kept: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        part = render(template, mine, *rules.identity(project), Path(work))
        files = wanted_files(part, pkg, cloud)
        for rel, source in files.items():
            put(project, rel, source.read_bytes(), before["files"].get(rel), changed, kept, source.stat().st_mode & 0o777)
        record = {"answers": mine, "files": {rel: sha(p.read_bytes()) for rel, p in files.items()},
                  **needs(part, config, mine)}
    for rel in sorted(set(before["files"]) - set(record["files"])):  # the template dropped it
        if (project / rel).exists() and sha((project / rel).read_bytes()) == before["files"][rel]:
            (project / rel).unlink()
            changed.append(rel)
    put(project, f"clusters/{pkg}/cluster.json", (json.dumps(record, indent=2) + "\n").encode(),
        sha(record_path.read_bytes()) if record_path.exists() else None, changed, kept)
    static_path = project / "clusters" / "static.json"
    static = json.loads(static_path.read_text())["files"] if static_path.exists() else {}
    files = template / "cluster" / "files"
    sources = {p.relative_to(files).as_posix(): p
               for p in sorted(files.rglob("*")) if p.is_file() and not leftover(p.relative_to(template))}
    for rel, source in sources.items():
        put(project, rel, source.read_bytes(), static.get(rel), changed, kept, source.stat().st_mode & 0o777)
    put(project, "clusters/static.json", (json.dumps({"files": {rel: sha(p.read_bytes()) for rel, p in sources.items()}},
                                                     indent=2) + "\n").encode(),
        sha(static_path.read_bytes()) if static_path.exists() else None, changed, kept)
    synced, notes = load(project / "clusters" / "manage.py", "_kpo_manage").sync(project)
    if not before["files"]:  # a new cluster: its example connection and pool, like a new project's
        subprocess.run([sys.executable, "-B", f"clusters/{pkg}/scripts/write_connection.py", "--placeholder"],
                       cwd=project, check=True)
        synced.append("airflow_settings.yaml")
    os.chdir(project)
    shutil.rmtree(workdir)
    for rel in kept:
        say(f"kept {rel}: edited since it was written; the template's version differs (see cluster.json)")
    for note in notes:
        say(note)
    if not changed and not synced:
        say(f"cluster {cid} is already in this project (clusters/{pkg}); nothing to change")
        return 0
    verb = "Updated" if before["files"] else "Added"
    say(f"\n{verb} cluster {cid} ({config['_clouds'][cloud]['label']}) in clusters/{pkg}: "
        f"{len(changed)} files; shared files updated: {', '.join(synced) or 'none'}. Next steps:")
    steps = [line.replace("scripts/setup_remote.sh", f"clusters/{pkg}/scripts/setup_remote.sh")
             for line in config["_clouds"][cloud]["next_steps"] if not line.startswith("astro dev")]
    steps.append("astro dev restart      # then trigger check_remote_clusters: every cluster green")
    steps.append("scripts/deploy.sh --deployment-id <id>   # every connection and pool, then astro deploy")
    for n, line in enumerate(steps, 1):
        say(f"  {n}. {line}")
    primary_cloud = load(project / "include" / "remote_cluster.py", "_kpo_primary_cluster").CLOUD
    if verb == "Added" and cloud != primary_cloud and cloud in FEDERATION:
        say(f"  Note: deployed, Astro gives the deployment the workload identity of the cloud it runs in; this {cloud}\n"
            f"  cluster, reached from a deployment on another cloud, needs that identity federated ({FEDERATION[cloud]}).\n"
            "  Locally your own credentials work.")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r'''{{ cookiecutter | tojson }}''')))
