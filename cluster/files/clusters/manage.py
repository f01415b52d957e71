#!/usr/bin/env python3
"""The clusters added to this project: list them, remove one, keep the shared files in step.

  python3 clusters/manage.py list                 # every cluster: the primary, then the added ones
  python3 clusters/manage.py remove <cluster_id> [--force]  # its folder, GPU DAG, connection; then sync
  python3 clusters/manage.py sync                 # recompute the managed blocks of the shared files
  python3 clusters/manage.py update [--template PATH|URL]   # re-add every cluster from the template

An added cluster lives in clusters/<package>/ (cluster.json: its answers, files and needs). The
files every cluster shares get managed blocks, each between two marker lines, computed from all
cluster.json files: Dockerfile (the kubeconfig plugins the primary lacks, each tool once),
requirements.txt (the providers it lacks), docker-compose.override.yml and .env (local
credentials of the added clouds). Remove every block and the file is what it was before the first
add. A block edited by hand is not overwritten: one line says what to change by hand instead.
airflow_settings.yaml and connection.env belong to each cluster's scripts/write_connection.py.
Python 3.9+ standard library only (update also needs cookiecutter and git).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = "clusters/static.json"  # the files every added cluster shares (clusters/__init__.py, the combined DAGs)
BEGIN = re.compile(r"( *)# >>> clusters/manage.py sync ([0-9a-f]{12}): managed, do not edit >>>")
END = "# <<< clusters/manage.py sync <<<"
SYNTAX = "# syntax=docker/dockerfile:1.7"
REQUIREMENT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*(.*)")
SHARED = ("Dockerfile", "requirements.txt", "docker-compose.override.yml", ".env")


class Refusal(Exception):
    """One ERROR: line, exit 1."""


def clusters(root: Path) -> list[dict]:
    """Every added cluster's cluster.json, with "package" and "folder", sorted by cluster id."""
    found = []
    for path in (root / "clusters").glob("*/cluster.json"):
        found.append({**json.loads(path.read_text()), "package": path.parent.name, "folder": path.parent})
    return sorted(found, key=lambda c: c["answers"]["cluster_id"])


def primary(root: Path):
    spec = importlib.util.spec_from_file_location("_primary_remote_cluster", root / "include" / "remote_cluster.py")
    module = importlib.util.module_from_spec(spec)
    written, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the project
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = written
    return module


# ---- managed blocks -------------------------------------------------------------------------------

def digest(body: list[str]) -> str:
    return hashlib.sha256("\n".join(body).encode()).hexdigest()[:12]


def block(body: list[str], indent: str = "") -> list[str]:
    return [f"{indent}# >>> clusters/manage.py sync {digest(body)}: managed, do not edit >>>", *body, indent + END]


def strip(lines: list[str]) -> tuple[list[str], bool]:
    """The lines without any managed block, and whether every block is as sync wrote it."""
    kept, intact, i = [], True, 0
    while i < len(lines):
        match = BEGIN.fullmatch(lines[i])
        if not match:
            kept.append(lines[i])
            i += 1
            continue
        stop = next((j for j in range(i + 1, len(lines)) if lines[j] == match.group(1) + END), None)
        if stop is None:
            return lines, False
        intact &= digest(lines[i + 1:stop]) == match.group(2)
        if i == 1 and kept == [SYNTAX]:  # the parser directive sync put above its first Dockerfile block
            kept = []
        i = stop + 1
    return kept, intact


def managed_lines(lines: list[str]) -> list[tuple[int, int]]:
    """1-based (first, last) line of each managed block with its markers (and the parser directive sync put
    above a first Dockerfile block)."""
    spans, i = [], 0
    while i < len(lines):
        match = BEGIN.fullmatch(lines[i])
        stop = next((j for j in range(i + 1, len(lines)) if lines[j] == match.group(1) + END), None) if match else None
        if stop is None:
            i += 1
            continue
        first = 0 if i == 1 and lines[0] == SYNTAX else i
        spans.append((first + 1, stop + 1))
        i = stop + 1
    return spans


def requirement(line: str) -> tuple[str, set[str], str] | None:
    text = line.split("#")[0].strip()
    match = REQUIREMENT.fullmatch(text) if text and not text.startswith("-") else None
    if not match:
        return None
    extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), extras, match.group(3).replace(" ", "")


def requirements_blocks(base: list[str], added: list[dict], notes: list[str]) -> list[tuple[int, list[str]]]:
    have = {r[0]: r for r in map(requirement, base) if r}
    wanted: dict[str, tuple[str, set[str], str, str]] = {}  # normalized name -> (name as written, extras, spec, by)
    for c in added:
        for line in c["requirements"]:
            name, extras, spec = requirement(line)
            written = REQUIREMENT.fullmatch(line.strip()).group(1)
            first = wanted.setdefault(name, (written, set(), spec, c["answers"]["cluster_id"]))
            first[1].update(extras)
    lines = []
    for name, (written, extras, spec, by) in wanted.items():
        if name in have and have[name][2] != spec:
            notes.append(f"requirements.txt: keeps the project's {name}{have[name][2]}; cluster {by} was rendered "
                         f"with {spec} (re-add it after updating the project: python3 clusters/manage.py update)")
        elif name not in have or not extras <= have[name][1]:
            union = sorted(extras | (have[name][1] if name in have else set()))
            lines.append(written + (f"[{','.join(union)}]" if union else "") + spec)
    return [(len(base), block(lines))] if lines else []


def env_blocks(base: list[str], added: list[dict], notes: list[str]) -> list[tuple[int, list[str]]]:
    have = {line.split("=", 1)[0] for line in base if "=" in line and not line.lstrip().startswith("#")}
    lines = []
    for c in added:
        for line in c["local"].get("env", []):
            if line.split("=", 1)[0] not in have:
                have.add(line.split("=", 1)[0])
                lines.append(line)
    return [(len(base), block(lines))] if lines else []


def stages(tool: dict) -> list[str]:
    """The main template's toolchain stages, named after the tool: ADD --checksum per architecture."""
    name, archive = tool["name"], tool["archive"]
    lines = [f"# {name} {tool['version']} for the kubeconfig exec plugin of an added cluster."]
    for arch in ("amd64", "arm64"):
        lines += [f"FROM {tool['builder']} AS {name}-{arch}", f"ADD --checksum=sha256:{tool['sha256'][arch]} \\",
                  f"    {tool['url'][arch]} /tmp/{name}.{archive}", ""]
    unpack = f"unzip -q /tmp/{name}.zip" if archive == "zip" else f"tar -xzf /tmp/{name}.tar.gz"
    return lines + ["# hadolint ignore=DL3006", f"FROM {name}-${{TARGETARCH}} AS {name}", "ARG TARGETARCH",
                    "WORKDIR /tmp/unpacked", f"RUN {unpack} \\",
                    f"    && install -m 0755 \"{tool['member']}\" /usr/local/bin/{name}", ""]


def dockerfile_blocks(base: list[str], added: list[dict], notes: list[str]) -> list[tuple[int, list[str]]]:
    text = "\n".join(base)
    tools = {}
    for c in added:
        tool = c.get("toolchain")
        if tool and tool["name"] not in tools and f" /usr/local/bin/{tool['name']} " not in text:
            tools[tool["name"]] = tool
    if not tools:
        return []
    froms = [i for i, line in enumerate(base) if line.startswith("FROM ")]
    if not froms:
        notes.append(f"Dockerfile: no FROM line; add by hand the stages and COPY of {', '.join(tools)} "
                     "(see clusters/*/cluster.json toolchain)")
        return []
    final = froms[-1]
    body = [] if re.search(r"^ARG TARGETARCH=", "\n".join(base[:froms[0]]), re.M) else ["ARG TARGETARCH=amd64", ""]
    for check, why in (("CKV_DOCKER_4", "ADD --checksum is the verified download; COPY cannot fetch a URL"),
                       ("CKV_DOCKER_7", "<tool>-${TARGETARCH} names a stage of this file, not an image")):
        if f"checkov:skip={check}" not in text:
            body.insert(0, f"# checkov:skip={check}: {why}")
    for tool in tools.values():
        body += stages(tool)
    copies = [f"COPY --from={name} /usr/local/bin/{name} /usr/local/bin/{name}" for name in tools]
    found = [(final, block(body)), (final + 1, block(copies))]
    if not base[0].startswith("# syntax="):  # a parser directive must be the first line: its block follows it
        found.insert(0, (0, [SYNTAX, *block(["# The line above lets BuildKit read ADD --checksum (added clusters' stages)."])]))
    return found


def compose_blocks(base: list[str], added: list[dict], notes: list[str]) -> list[tuple[int, list[str]]]:
    volumes, environment = [], {}
    for c in added:
        volumes += [v for v in c["local"].get("volumes", []) if v not in volumes]
        environment.update({k: v for k, v in c["local"].get("environment", {}).items() if k not in environment})
    if not volumes and not environment:
        return []
    if not base:  # a project without local credentials of its own: the whole file is the block
        body = ["# Local development: lend your own cloud credentials to the containers that run tasks",
                "# (scheduler) and watch deferred pods (triggerer), for the added clusters.",
                "x-cloud-credentials: &cloud-credentials"]
        body += ["  volumes:", *(f"    - {json.dumps(v)}" for v in volumes)] if volumes else []
        body += ["  environment:", *(f"    {k}: {json.dumps(v)}" for k, v in environment.items())] if environment else []
        return [(0, block([*body, "", "services:", "  scheduler: *cloud-credentials",
                                "  triggerer: *cloud-credentials"]))]
    anchor = next((i for i, line in enumerate(base) if line.endswith("&cloud-credentials")), None)
    if anchor is None:
        notes.append("docker-compose.override.yml: no &cloud-credentials anchor; add by hand to scheduler and "
                     f"triggerer: volumes {volumes}, environment {environment}")
        return []
    stop = next((i for i in range(anchor + 1, len(base)) if base[i][:1] not in ("", " ")), len(base))
    sections: dict[str, tuple[int, set[str]]] = {}  # "volumes"/"environment" -> (line after its last item, items)
    current = None
    for i in range(anchor + 1, stop):
        line = base[i]
        if re.fullmatch(r"  [a-z_]+:", line):
            current = line.strip()[:-1]
            sections[current] = (i + 1, set())
        elif current and line.startswith("    ") and not line.lstrip().startswith("#"):
            item = line.strip()[2:] if current == "volumes" else line.strip().split(":", 1)[0]
            sections[current] = (i + 1, sections[current][1] | {item.strip('"')})
    found = []
    end = max((at for at, _ in sections.values()), default=anchor + 1)
    new_volumes = [v for v in volumes if v not in sections.get("volumes", (0, set()))[1]]
    if new_volumes:
        at = sections["volumes"][0] if "volumes" in sections else end
        items = [f"    - {json.dumps(v)}" for v in new_volumes]
        found.append((at, block(items, "    ") if "volumes" in sections else block(["  volumes:", *items], "  ")))
    new_env = {k: v for k, v in environment.items() if k not in sections.get("environment", (0, set()))[1]}
    if new_env:
        items = [f"    {k}: {json.dumps(v)}" for k, v in new_env.items()]
        at = sections["environment"][0] if "environment" in sections else end
        found.append((at, block(items, "    ") if "environment" in sections else block(["  environment:", *items], "  ")))
    return found


BLOCKS = {"Dockerfile": dockerfile_blocks, "requirements.txt": requirements_blocks,
          "docker-compose.override.yml": compose_blocks, ".env": env_blocks}


def sync(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """Recompute every shared file's managed blocks from all cluster.json files: (changed files, notes)."""
    added, changed, notes = clusters(root), [], []
    for name in SHARED:
        path = root / name
        text = path.read_text() if path.exists() else ""
        lines, intact = strip(text.splitlines())
        blocks = BLOCKS[name](lines, added, notes)
        wanted = list(lines)
        for at, _, new in sorted(((at, i, new) for i, (at, new) in enumerate(blocks)), reverse=True):
            wanted[at:at] = new  # bottom up; blocks at one place keep their order
        result = "\n".join(wanted) + "\n" if wanted else ""
        if result == text:
            continue
        if not intact and not blocks:  # nothing should stay: say which lines go
            spans = ", ".join(f"{a}-{b}" for a, b in managed_lines(text.splitlines()))
            notes.append(f"{name}: its clusters/manage.py block was edited by hand, so it is not removed; delete "
                         f"lines {spans or '(none found)'} of {name} (the block with its marker lines)")
            continue
        if not intact:
            summary = "; ".join(line.strip() for _, new in blocks for line in new[1:-1] if line.strip()) or "nothing"
            notes.append(f"{name}: its clusters/manage.py block was edited by hand, so it is not overwritten; "
                         f"make the block hold: {summary[:300]}")
            continue
        if result:
            path.write_text(result)
        else:
            path.unlink()
        changed.append(name)
    return changed, notes


# ---- commands ---------------------------------------------------------------------------------------

def list_clusters(root: Path) -> int:
    rc = primary(root)
    rows = [(rc.CLUSTER_NAME, rc.CLOUD, rc.CONNECTION_ID, rc.REMOTE_NAMESPACE, "include/ (primary)")]
    rows += [(c["answers"]["cluster_id"], c["answers"]["cloud"], c["answers"]["kubernetes_conn_id"],
              c["answers"]["namespace"], f"clusters/{c['package']}/") for c in clusters(root)]
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(str(row[i]).ljust(widths[i]) for i in range(4)), row[4])
    return 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def users(root: Path, match: dict, last: bool) -> list[str]:
    """DAG files (not the combined ones, not the cluster's own) that name the cluster, or on the last one
    import the registry: they would stop loading once it is gone."""
    static = root / STATIC
    own = set(json.loads(static.read_text())["files"] if static.exists() else []) | set(match["files"])
    cid = match["answers"]["cluster_id"]
    named = re.compile(rf"""["']{re.escape(cid)}["']""" + (r"|^\s*(?:from|import)\s+clusters\b" if last else ""), re.M)
    return [p.relative_to(root).as_posix() for p in sorted((root / "dags").rglob("*.py"))
            if p.relative_to(root).as_posix() not in own and named.search(p.read_text(errors="replace"))]


def outside(root: Path, match: dict, settings: str) -> list[str]:
    """What removing leaves outside the project: the cluster side and the deployment side."""
    a, pkg = match["answers"], match["package"]
    cloud, name, ns = a["cloud"], a["cluster_name"], a["namespace"]
    role = re.search(r'^RUNNER_ROLE_ARN = ".*/([^/"]+)"', settings, re.M)
    identity = re.search(r'^RUNNER_IDENTITY = "([^"]+)"', settings, re.M)
    gpu = a.get("gpu_node_group") in (True, "True")
    side = {"aws": f"IAM role {role.group(1) if role else '<slug>-' + a['cluster_id'] + '-kpo-runner'} and its EKS "
                   f"access entry on {name}" + (" (and the GPU node role, if setup made it)" if gpu else ""),
            "gcp": f"the IAM binding that lets {identity.group(1) if identity else 'the deployment'} reach {name} "
                   f"(project {a.get('gcp_project_id')})",
            "azure": f"the managed identity's role assignment on AKS cluster {name}",
            "generic": "the ServiceAccount in that namespace: a token issued for it stays valid until it expires"}[cloud]
    conn = a["kubernetes_conn_id"]
    conns = [conn] + ([f"{conn}_{cloud}"] if gpu and a.get("pod_operator") != "native" else [])
    return [f"Still outside the project for {a['cluster_id']} ({cloud}):",
            f"  cluster {name}: namespace {ns} with its Role, RoleBinding and quota; {side}.",
            f"    kubectl delete namespace {ns}   # in {name}'s kubectl context",
            f"  each Astro deployment: variable(s) {', '.join('AIRFLOW_CONN_' + c.upper() for c in conns)} and pool "
            f"remote_kpo_{pkg} (Astro UI: Deployment > Environment; Airflow UI: Admin > Pools)."]


def remove(root: Path, cluster_id: str, force: bool = False) -> int:
    added = clusters(root)
    match = next((c for c in added if c["answers"]["cluster_id"] == cluster_id), None)
    if match is None:
        known = ", ".join(c["answers"]["cluster_id"] for c in added) or "none"
        rc = primary(root)
        raise Refusal(f"cluster_id: {cluster_id!r} is not an added cluster (added: {known}; the primary "
                      f"{rc.CLUSTER_NAME} is the project itself), e.g. python3 clusters/manage.py list")
    folder = match["folder"]
    last = len(added) == 1
    if not force:
        found = users(root, match, last)
        edited = [rel for rel, digest in match["files"].items() if (root / rel).is_file() and sha256(root / rel) != digest]
        lines = ([f"remove: {', '.join(found)} " + ("name cluster " + repr(cluster_id) + (" or import clusters" if last else "")
                  ) + " and would stop loading; change them first, or remove anyway with --force"] if found else [])
        lines += ([f"remove: {', '.join(edited)} edited since it was written (hash differs from cluster.json) would be "
                   "lost; copy what you need, or remove anyway with --force"] if edited else [])
        if lines:
            raise Refusal("\nERROR: ".join(lines))
    settings_file = folder / "include" / "remote_cluster.py"
    settings = settings_file.read_text() if settings_file.is_file() else ""
    writer = folder / "scripts" / "write_connection.py"
    if writer.exists() and subprocess.run([sys.executable, "-B", str(writer), "--remove"], cwd=root).returncode:
        raise Refusal(f"remove: {writer.relative_to(root)} --remove failed (its message is above); nothing was removed")
    for rel in match["files"]:
        if not rel.startswith("clusters/") and (root / rel).exists():
            (root / rel).unlink()
            print(f"removed {rel}")
    shutil.rmtree(folder)
    print(f"removed clusters/{match['package']}/")
    if not clusters(root):  # the last one: back to a one-cluster project
        static = root / STATIC
        for rel in json.loads(static.read_text())["files"] if static.exists() else []:
            if not rel.startswith("clusters/") and (root / rel).exists():
                (root / rel).unlink()
                print(f"removed {rel}")
    changed, notes = sync(root)
    for name in changed:
        print(f"updated {name}")
    for note in notes:
        print(note, file=sys.stderr)
    if not clusters(root):
        shutil.rmtree(root / "clusters")
        print("removed clusters/: no added cluster left, the project is a one-cluster project again")
    print("\n".join(outside(root, match, settings)))
    return 0


def template_at_commit(root: Path, work: Path) -> str:
    cruft = root / ".cruft.json"
    if not cruft.exists():
        raise Refusal("--template: this project has no .cruft.json to find its template in; name it, "
                      "e.g. --template https://github.com/<owner>/<template>.git or --template ../template")
    data = json.loads(cruft.read_text())
    target = work / "template"
    for cmd in (["git", "clone", "--quiet", data["template"], str(target)],
                ["git", "-C", str(target), "checkout", "--quiet", data["commit"]]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise Refusal(f"--template: {' '.join(cmd[:3])} ... failed ({done.stderr.strip()[:200]}); "
                          "name the template instead, e.g. --template ../template")
    return str(target)


def update(root: Path, template: str | None) -> int:
    added = clusters(root)
    if not added:
        raise Refusal("update: this project has no added cluster; add one with cookiecutter <template> --directory cluster")
    if importlib.util.find_spec("cookiecutter") is None:
        raise Refusal(f"update: cookiecutter is not installed for {sys.executable}; pip install cookiecutter, "
                      "or run this script with the Python that has it")
    with tempfile.TemporaryDirectory() as work:
        source = template or template_at_commit(root, Path(work))
        for c in added:
            words = [f"{k}={('yes' if v else 'no') if isinstance(v, bool) else v}" for k, v in c["answers"].items()]
            print(f"updating {c['answers']['cluster_id']} from {template or 'the template at its .cruft.json commit'}")
            done = subprocess.run([sys.executable, "-m", "cookiecutter", "--no-input", source, "--directory", "cluster",
                                   "--output-dir", str(root), *words], cwd=root)
            if done.returncode:
                return done.returncode
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The clusters added to this project.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every cluster: the primary, then the added ones")
    removing = commands.add_parser("remove", help="remove an added cluster")
    removing.add_argument("cluster_id")
    removing.add_argument("--force", action="store_true", help="remove even if DAGs use it or its files were edited")
    commands.add_parser("sync", help="recompute the shared files' managed blocks")
    commands.add_parser("update", help="re-add every cluster from the template").add_argument(
        "--template", help="template path or URL (default: .cruft.json's, at its commit)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return list_clusters(ROOT)
        if args.command == "remove":
            return remove(ROOT, args.cluster_id, args.force)
        if args.command == "update":
            return update(ROOT, args.template)
        changed, notes = sync(ROOT)
        for name in changed:
            print(f"updated {name}")
        for note in notes:
            print(note, file=sys.stderr)
        if not changed and not notes:
            print("nothing to change")
        return 0
    except Refusal as refusal:
        print(f"ERROR: {refusal}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
