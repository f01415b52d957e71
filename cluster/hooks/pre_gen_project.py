"""Refuse a cluster this project cannot take, before anything is written.

The field rules are the main template's (its hooks/pre_gen_project.py, loaded by path: one place
for them). This file adds what only the cluster/ template asks or only the project can say: the
cluster id, that there is a project here, and that the new cluster collides with none of its
clusters. ../local_extensions.py runs ``check`` while prompting; as a hook it is the backstop.
Same output as the main template: one ``ERROR: <field>: ...`` line per bad answer, exit 1.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

# 32 characters at most, DNS-label-like: it ends up in IAM role names, RBAC groups and file names.
CLUSTER_ID = (r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?",
              "lowercase letters, digits and '-', starting with a letter, not ending in '-', at most 32 characters",
              "gke-gpu")
IAM_ROLE_NAME_MAX = 64
ORDER = ["project", "cluster_id", "cloud", "cluster_name", "namespace", "kubernetes_conn_id"]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    written, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the project
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = written
    return module


def relevant(answers: dict, clouds: dict) -> dict:
    """The public answers that shape this cluster: other clouds' answers are left out."""
    return {k: v for k, v in answers.items() if not k.startswith("_")
            and (k.split("_")[0] not in clouds or k.split("_")[0] == answers.get("cloud"))}


def identity(project: Path) -> tuple[str, str]:
    """(project_slug, project_name): from .cruft.json, else from the primary's POD_LABELS."""
    cruft = project / ".cruft.json"
    if cruft.is_file():
        context = json.loads(cruft.read_text())["context"]["cookiecutter"]
        return context["project_slug"], context["project_name"]
    rc = load(project / "include" / "remote_cluster.py", "_kpo_primary_cluster")
    slug = rc.POD_LABELS[rc.PROJECT_LABEL].replace("-", "_")  # slugs never hold '-'
    return slug, slug


def connection_ids(answers: dict) -> set[str]:
    """The connections a cluster with these answers uses (include/remote_cluster.py connections())."""
    conn_id = answers["kubernetes_conn_id"]
    extra = answers["gpu_node_group"] in (True, "True") and answers["pod_operator"] != "native"
    return {conn_id, f"{conn_id}_{answers['cloud']}"} if extra else {conn_id}


def gpu_cluster(cloud: str, cluster_name: str, gpu, where: tuple[str, str]) -> tuple | None:
    """The Kubernetes cluster a GPU node group is made in (cloud, name, account/project, region/location),
    None without one: two entries with the same one would create and delete the same node group."""
    return (cloud, cluster_name, *where) if gpu in (True, "True") and cloud in ("aws", "gcp") else None


def clusters(project: Path) -> list[dict]:
    """Every cluster of the project: the primary first, then the added ones."""
    rc = load(project / "include" / "remote_cluster.py", "_kpo_primary_cluster")
    place = {"aws": ("AWS_ACCOUNT_ID", "AWS_REGION"), "gcp": ("GCP_PROJECT_ID", "GCP_LOCATION")}.get(rc.CLOUD, ())
    found = [{"id": rc.CLUSTER_NAME, "where": "include/remote_cluster.py", "answers": None,
              "cluster_name": rc.CLUSTER_NAME, "namespace": rc.REMOTE_NAMESPACE,
              "connections": {conn_id for conn_id, _, _ in rc.connections()},
              "gpu": gpu_cluster(rc.CLOUD, rc.CLUSTER_NAME, getattr(rc, "GPU_NODE_GROUP", False),
                                 tuple(getattr(rc, name, "") for name in place))}]
    for path in sorted((project / "clusters").glob("*/cluster.json")):
        answers = json.loads(path.read_text())["answers"]
        found.append({"id": answers["cluster_id"], "where": path.parent.relative_to(project).as_posix(),
                      "answers": answers, "cluster_name": answers["cluster_name"],
                      "namespace": answers["namespace"], "connections": connection_ids(answers),
                      "gpu": gpu_of(answers)})
    return found


def gpu_of(answers: dict) -> tuple | None:
    cloud = answers["cloud"]
    place = {"aws": ("aws_account_id", "aws_region"), "gcp": ("gcp_project_id", "gcp_location")}.get(cloud, ())
    return gpu_cluster(cloud, answers["cluster_name"], answers.get("gpu_node_group"),
                       tuple(answers.get(name, "") for name in place))


def collisions(answers: dict, project: Path, slug: str, clouds: dict, bad: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    cluster_id, mine = answers["cluster_id"], relevant(answers, clouds)
    for other in clusters(project):
        if other["id"] == cluster_id and other["answers"] is None:
            found["cluster_id"] = (f"ERROR: cluster_id: {cluster_id!r} names the primary cluster (CLUSTER_NAME in "
                                   f"{other['where']}); choose another id, e.g. gke-gpu")
            continue  # what the id derives (cluster_name) would collide too: one line is enough
        if other["id"] == cluster_id:
            if other["answers"] != mine:
                diff = ", ".join(f"{k}: {other['answers'].get(k)!r} there, {v!r} here"
                                 for k, v in mine.items() if other["answers"].get(k) != v)
                found["cluster_id"] = (f"ERROR: cluster_id: {cluster_id!r} is already in this project ({other['where']}) "
                                       f"with other answers ({diff}); remove it first (python3 clusters/manage.py "
                                       f"remove {cluster_id}) or choose another id")
            continue  # the same cluster again: the add finds nothing (or only template changes) to write
        if "kubernetes_conn_id" not in bad and connection_ids(answers) & other["connections"]:
            taken = ", ".join(sorted(connection_ids(answers) & other["connections"]))
            found["kubernetes_conn_id"] = (f"ERROR: kubernetes_conn_id: connection {taken} is cluster {other['id']}'s "
                                           f"({other['where']}); use one of its own, e.g. remote_kubernetes_"
                                           f"{cluster_id.replace('-', '_')}")
        if not {"cluster_name", "namespace"} & bad and (other["cluster_name"], other["namespace"]) == (
                answers["cluster_name"], answers["namespace"]):
            found["namespace"] = (f"ERROR: namespace: {answers['namespace']!r} on {answers['cluster_name']!r} is "
                                  f"cluster {other['id']}'s ({other['where']}); one namespace per cluster entry, "
                                  f"e.g. {answers['namespace'][:30]}-{cluster_id}")
        if not {"gpu_node_group", "cluster_name"} & bad and gpu_of(answers) and gpu_of(answers) == other["gpu"]:
            cloud, name, *where = other["gpu"]
            found["gpu_node_group"] = (f"ERROR: gpu_node_group: cluster {other['id']} ({other['where']}) already has "
                                       f"the GPU node group of {cloud} cluster {name} ({'/'.join(where)}): both would "
                                       "create and delete node group airflow-gpu-remote-kpo and each runner's IAM could "
                                       "delete the other's; answer no here, e.g. gpu_node_group=no")
    role = f"{slug.replace('_', '-')}-{cluster_id}-kpo-runner"
    if answers["cloud"] == "aws" and len(role) > IAM_ROLE_NAME_MAX and "cluster_id" not in found:
        found["cluster_id"] = (f"ERROR: cluster_id: the EKS runner role would be {role} ({len(role)} characters, IAM "
                               f"allows {IAM_ROLE_NAME_MAX}); use an id of at most "
                               f"{IAM_ROLE_NAME_MAX - len(role) + len(cluster_id)} characters, e.g. eks-2")
    return found


def check(answers: dict, project: Path, rules, derived: dict | None = None) -> dict[str, str]:
    """Every refusal at once, {field: line}, in the order the prompts ask. ``rules``: the main template's
    hooks/pre_gen_project.py; ``derived``: the values cookiecutter.json derives from the cluster id
    (a derived answer is not refused again when the id is: fixing the id fixes it)."""
    clouds = answers["_clouds"]
    in_project = (project / "include" / "remote_cluster.py").is_file()
    slug, name = identity(project) if in_project else ("project", "Project")
    found = {k: v for k, v in rules.check({**answers, "project_slug": slug, "project_name": name}).items()
             if k not in ("project_slug", "project_name")}
    if not rules.fits(answers.get("cluster_id"), rules.Rule(*CLUSTER_ID)):
        found["cluster_id"] = rules.refusal("cluster_id", answers.get("cluster_id"), rules.Rule(*CLUSTER_ID))
        found = {k: v for k, v in found.items() if answers.get(k) != (derived or {}).get(k, object())}
    if not in_project:
        found["project"] = (f"ERROR: project: {str(project)[:80]} has no include/remote_cluster.py; run this from "
                            "the root of a project rendered by this template (cd my_project), or name it with -o")
    elif not found.keys() & {"cluster_id", "cloud"}:
        found = collisions(answers, project, slug, clouds, set(found)) | found
    order = ORDER + [*rules.RULES]
    return dict(sorted(found.items(), key=lambda item: order.index(item[0])))


def main(answers: dict) -> int:
    template = Path(answers["_repo_dir"]).parent
    rules = load(template / "hooks" / "pre_gen_project.py", "_kpo_main_rules")
    clouds = json.loads((template / "cookiecutter.json").read_text())["_clouds"]
    errors = check({**answers, "_clouds": clouds}, Path(answers["_output_dir"]), rules)
    for line in errors.values():
        print(line, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r'''{{ cookiecutter | tojson }}''')))
