#!/usr/bin/env python3
{%- set cluster_id = cookiecutter._cluster_id %}
{%- set writer = "clusters/" ~ cluster_id | replace("-", "_") ~ "/scripts/write_connection.py" %}
"""Write the Airflow connection for the remote cluster, so nobody hand-edits YAML or JSON.

It asks the cloud CLI (or an existing kubeconfig) for the API endpoint and CA, builds the
kubeconfig from include/remote_cluster.py, and writes it twice:

  airflow_settings.yaml  the connection `astro dev start` creates locally (managed block)
  connection.env         AIRFLOW_CONN_<ID>=<json> to load into the Astro deployment:
                         astro deployment variable create --deployment-id <id> \\
                             --load --env connection.env --secret

Both files are in .gitignore and .dockerignore. Python 3.9+ standard library only.
{%- if cluster_id %}

This copy belongs to cluster {{ cluster_id }}:
  {{ writer }}
It writes the PROJECT ROOT's two files, which hold every cluster's connection, and changes
only its own part of them: one managed connection block and one managed pool block in
airflow_settings.yaml, its own AIRFLOW_CONN_<ID> lines in connection.env. --remove takes that
part out again (python3 clusters/manage.py remove {{ cluster_id }} calls it).
{%- endif %}

  python3 scripts/write_connection.py                      # ask the cloud CLI
  python3 scripts/write_connection.py --kubeconfig PATH [--context NAME]
  python3 scripts/write_connection.py --dry-run            # print the commands, write nothing
{%- if cluster_id %}
  python3 scripts/write_connection.py --remove             # delete this cluster's block and lines
{%- endif %}
"""

from __future__ import annotations

import argparse
import json
import os
{%- if cluster_id %}
import re
{%- endif %}
import shlex
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from include import remote_cluster as rc  # noqa: E402  (needs the project on sys.path)
{% if cluster_id %}
# This folder is clusters/<pkg>/ of a project; the project root holds the connection files.
ROOT = PROJECT.parent.parent
SETTINGS = ROOT / "airflow_settings.yaml"
CONNECTION_ENV = ROOT / "connection.env"
WRITER = {{ writer | tojson }}
BEGIN = f"    # >>> remote cluster connection {rc.CONNECTION_ID}: written by {WRITER} >>>"
END = f"    # <<< remote cluster connection {rc.CONNECTION_ID} <<<"
POOL_BEGIN = f"    # >>> remote cluster pool {rc.REMOTE_POOL}: written by {WRITER} >>>"
POOL_END = f"    # <<< remote cluster pool {rc.REMOTE_POOL} <<<"
# Any block this writer wrote, under whatever connection or pool name it had then.
OWN_BLOCK = re.compile(r"    # >>> remote cluster (connection|pool) (\S+): written by " + re.escape(WRITER) + " >>>")
{%- else %}
SETTINGS = PROJECT / "airflow_settings.yaml"
CONNECTION_ENV = PROJECT / "connection.env"
BEGIN = "    # >>> remote cluster connection: written by scripts/write_connection.py >>>"
END = "    # <<< remote cluster connection <<<"
SETTINGS_SKELETON = f"""\
# Airflow objects `astro dev start` creates locally. Not deployed: .dockerignore keeps this
# file out of the image; load connection.env into the deployment instead (see README).
airflow:
  connections:
{BEGIN}
{END}
  pools:
    - pool_name: {rc.REMOTE_POOL}
      pool_slot: {rc.REMOTE_POOL_SLOTS}
      pool_description: Caps concurrent pods on the remote cluster {rc.CLUSTER_NAME}
  variables: []
"""
{%- endif %}
TOKEN_DURATION = "24h"


def cloud_command() -> list[str]:
    """The CLI call that prints this cluster's endpoint and CA."""
    {%- if cookiecutter.cloud == "aws" %}
    return ["aws", "eks", "describe-cluster", "--name", rc.CLUSTER_NAME,
            "--region", rc.AWS_REGION, "--output", "json"]
    {%- elif cookiecutter.cloud == "gcp" %}
    return ["gcloud", "container", "clusters", "describe", rc.CLUSTER_NAME,
            "--location", rc.GCP_LOCATION, "--project", rc.GCP_PROJECT_ID, "--format", "json"]
    {%- elif cookiecutter.cloud == "azure" %}
    return ["az", "aks", "show", "--name", rc.CLUSTER_NAME, "--resource-group",
            rc.AZURE_RESOURCE_GROUP, "--subscription", rc.AZURE_SUBSCRIPTION_ID, "--output", "json"]
    {%- else %}
    raise SystemExit("ERROR: --kubeconfig: a generic cluster is read from a kubeconfig, e.g. "
                     "--kubeconfig ~/.kube/config --context my-admin-context")
    {%- endif %}


def endpoint_from_cloud(output: dict) -> tuple[str, str]:
    {%- if cookiecutter.cloud == "aws" %}
    cluster = output["cluster"]
    return cluster["endpoint"], cluster["certificateAuthority"]["data"]
    {%- elif cookiecutter.cloud == "gcp" %}
    return f"https://{output['endpoint']}", output["masterAuth"]["clusterCaCertificate"]
    {%- elif cookiecutter.cloud == "azure" %}
    # `az aks show` has the FQDN but not the CA; the CA comes from a kubeconfig written to a
    # private temporary file (the AKS user kubeconfig holds no secret with Entra ID).
    import tempfile

    fqdn = output.get("privateFqdn") or output["fqdn"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubeconfig"
        run(["az", "aks", "get-credentials", "--name", rc.CLUSTER_NAME, "--resource-group",
             rc.AZURE_RESOURCE_GROUP, "--subscription", rc.AZURE_SUBSCRIPTION_ID,
             "--file", str(path)])
        _, ca_data = endpoint_from_kubeconfig(str(path), None)
    return f"https://{fqdn}:443", ca_data
    {%- else %}
    raise AssertionError(output)
    {%- endif %}


def run(cmd: list[str], env: dict | None = None) -> str:
    try:
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise SystemExit(f"ERROR: {cmd[0]} is not installed or not on PATH; install it, then run again") from None
    except subprocess.CalledProcessError as err:
        # The CLI's whole message (gcloud and az say what to do over several lines), indented so
        # that the one line starting with ERROR: is ours.
        detail = (err.stderr or err.stdout or "").strip()
        if detail:
            print(f"  {cmd[0]} says:", *("    " + line for line in detail.splitlines()), sep="\n", file=sys.stderr)
        raise SystemExit(f"ERROR: {shlex.join(cmd[:4])} ... failed (exit {err.returncode}); "
                         "its message is above") from None
    return done.stdout


def kubectl(kubeconfig: str | None, context: str | None, *args: str) -> list[str]:
    cmd = ["kubectl"]
    if kubeconfig:
        cmd += ["--kubeconfig", kubeconfig]
    if context:
        cmd += ["--context", context]
    return cmd + list(args)


def endpoint_from_kubeconfig(kubeconfig: str | None, context: str | None) -> tuple[str, str]:
    view = json.loads(run(kubectl(kubeconfig, context, "config", "view", "--raw", "--minify",
                                  "--flatten", "--output", "json")))
    cluster = view["clusters"][0]["cluster"]
    if "certificate-authority-data" not in cluster:
        raise SystemExit("ERROR: --kubeconfig: the cluster entry has no certificate-authority-data; "
                         "TLS verification stays on, so give a kubeconfig with the cluster CA")
    return cluster["server"], cluster["certificate-authority-data"]


def token_command(kubeconfig: str | None, context: str | None, duration: str) -> list[str]:
    """Generic clusters: a short-lived token for the runner ServiceAccount (no Secret involved)."""
    return kubectl(kubeconfig, context, "create", "token", getattr(rc, "SERVICE_ACCOUNT", ""),
                   "--namespace", rc.REMOTE_NAMESPACE, "--duration", duration)


def settings_block(connections: list[tuple[str, str, dict]]) -> str:
    # JSON is YAML: one flow-style line per connection, replaced whole next time.
    lines = [f"    - {json.dumps({'conn_id': i, 'conn_type': t, 'conn_extra': e})}" for i, t, e in connections]
    return "\n".join([BEGIN, *lines, END])


{%- if cluster_id %}


def pool_block() -> str:
    description = f"Caps concurrent pods on the remote cluster {rc.CLUSTER_ID}"
    if rc.CLUSTER_NAME != rc.CLUSTER_ID:
        description += f" ({rc.CLUSTER_NAME})"
    return "\n".join([POOL_BEGIN, f"    - pool_name: {rc.REMOTE_POOL}", f"      pool_slot: {rc.REMOTE_POOL_SLOTS}",
                      f"      pool_description: {description}", POOL_END])


def own_blocks(lines: list[str]) -> dict[str, tuple[int, int, str]]:
    """This writer's blocks by kind ("connection", "pool"): first line, line after the end, name."""
    found: dict[str, tuple[int, int, str]] = {}
    for start, line in enumerate(lines):
        if (match := OWN_BLOCK.fullmatch(line)) is None:
            continue
        kind, name = match.groups()
        end = f"    # <<< remote cluster {kind} {name} <<<"
        stop = next((i for i in range(start + 1, len(lines)) if lines[i] == end), None)
        if stop is None or kind in found:
            raise SystemExit(f"ERROR: {SETTINGS}: the managed {kind} block of {WRITER} is broken; restore "
                             f"its end line ({end.strip()}) or delete the block and run this script again")
        found[kind] = (start, stop + 1, name)
    return found


def list_end(lines: list[str], key: str) -> int:
    """Where a new item of the list `airflow.<key>` goes: after its last item (a new list if none)."""
    header = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() in (f"  {key}:", f"  {key}: []")), None)
    if header is None:
        lines.append(f"  {key}:")
        return len(lines)
    lines[header] = f"  {key}:"
    stop = header + 1
    while stop < len(lines) and lines[stop].startswith("    "):
        stop += 1
    return stop


def put_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replace this writer's blocks, or add each at the end of its list; the rest is kept."""
    lines = text.splitlines()
    for kind, block in blocks.items():
        found = own_blocks(lines)
        if kind in found:
            start, stop, _ = found[kind]
        else:
            start = stop = list_end(lines, {"connection": "connections", "pool": "pools"}[kind])
        lines[start:stop] = block.splitlines()
    return "\n".join(lines) + "\n"


def write_settings(connections: list[tuple[str, str, dict]]) -> None:
    if not SETTINGS.exists():
        # The project's own writer makes the file: its skeleton and the primary's example connection.
        subprocess.run([sys.executable, str(ROOT / "scripts" / "write_connection.py"), "--placeholder"], check=True)
    text = put_blocks(SETTINGS.read_text(), {"connection": settings_block(connections), "pool": pool_block()})
    write_private(SETTINGS, text)


def remove() -> list[str]:
    """Delete this cluster's blocks from airflow_settings.yaml and its lines from connection.env;
    the rest of both files is kept. Returns what was removed, one line per item."""
    removed, conn_ids = [], {conn_id for conn_id, _, _ in rc.connections()}
    if SETTINGS.exists():
        lines = SETTINGS.read_text().splitlines()
        for kind, (start, stop, name) in sorted(own_blocks(lines).items(), key=lambda item: -item[1][0]):
            if kind == "connection":  # the ids it holds, should they differ from today's
                conn_ids |= {json.loads(line[6:])["conn_id"] for line in lines[start + 1:stop - 1]
                             if line.startswith("    - {")}
            removed.append(f"{SETTINGS.name}: {kind} {name}")
            del lines[start:stop]
        if removed:
            write_private(SETTINGS, "\n".join(lines) + "\n")
    if CONNECTION_ENV.exists():
        lines = CONNECTION_ENV.read_text().splitlines()
        gone = [line.split("=", 1)[0] for line in lines if line.split("=", 1)[0] in
                {f"AIRFLOW_CONN_{conn_id.upper()}" for conn_id in conn_ids}]
        if gone:
            write_private(CONNECTION_ENV, "\n".join(line for line in lines if line.split("=", 1)[0] not in gone) + "\n")
            removed += [f"{CONNECTION_ENV.name}: {key}" for key in gone]
    return removed
{%- else %}


def write_settings(connections: list[tuple[str, str, dict]]) -> None:
    text = SETTINGS.read_text() if SETTINGS.exists() else SETTINGS_SKELETON
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise SystemExit(f"ERROR: {SETTINGS.name}: the managed connection block is gone; restore its "
                         "two marker lines or delete the file and run this script again")
    write_private(SETTINGS, text[:start] + settings_block(connections) + text[stop + len(END):])
{%- endif %}


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (the generic path holds a token), on every write:
    a new file of mode 0600 takes the old one's place, whatever the old one's mode was. Never
    through a symbolic link: the token would land wherever it points."""
    if path.is_symlink():
        raise SystemExit(f"ERROR: {path.name} is a symbolic link; it holds credentials, so this script writes only a "
                         f"regular file there: remove the link (rm {path.name}) and run it again")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def connection_env(connections: list[tuple[str, str, dict]], current: str = "") -> str:
    """connection.env with these connections' lines replaced or added; every other line of
    ``current`` (other clusters' connections, your own lines) is kept."""
    own = {}
    for conn_id, conn_type, extra in connections:
        # No ' in the value (JSON's \u0027 instead): the Astro CLI trims one layer of quotes and
        # would keep the '"'"' that shlex.quote makes of an apostrophe ("this project's Dockerfile").
        value = json.dumps({"conn_type": conn_type, "extra": extra}, separators=(",", ":")).replace("'", "\\u0027")
        own[f"AIRFLOW_CONN_{conn_id.upper()}="] = f"AIRFLOW_CONN_{conn_id.upper()}={shlex.quote(value)}"
    lines = current.splitlines() or ["# Load into the deployment as a secret (see README); never commit."]
    merged: list[str] = []
    for line in lines:
        key = line.split("=", 1)[0] + "="
        if key not in own:
            merged.append(line)
        elif own[key] is not None:  # a second line for the same key is dropped
            merged.append(own[key])
            own[key] = None
    merged += [line for line in own.values() if line is not None]
    return "\n".join(merged) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the remote cluster's Airflow connection.")
    parser.add_argument("--kubeconfig", help="read endpoint and CA from this kubeconfig instead of the cloud CLI")
    parser.add_argument("--context", help="kubeconfig context to read (default: current)")
    parser.add_argument("--token-duration", default=TOKEN_DURATION,
                        help="generic clusters: lifetime of the ServiceAccount token (default 24h)")
    parser.add_argument("--placeholder", action="store_true",
                        help="write the example connection without asking anything (used at render time)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, write nothing")
{%- if cluster_id %}
    parser.add_argument("--remove", action="store_true",
                        help="delete this cluster's connection and pool blocks and connection.env lines")
{%- endif %}
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
{%- if cluster_id %}
    if args.remove:
        removed = remove()
        for item in removed:
            print(f"removed {item}")
        if not removed:
            print(f"nothing of cluster {rc.CLUSTER_ID} in {SETTINGS.name} or {CONNECTION_ENV.name}")
        return 0
{%- endif %}
    if args.placeholder:
        write_settings(rc.connections())
        return 0
    # The native operator asks the cloud for endpoint and CA itself: nothing to look up.
    native = rc.POD_OPERATOR == "native"
    from_kubeconfig = bool(args.kubeconfig or args.context) or rc.EXEC_PLUGIN is None
    planned = [] if native else [kubectl(args.kubeconfig, args.context, "config", "view", "--raw", "--minify")
                                 if from_kubeconfig else cloud_command()]
    if not native and rc.EXEC_PLUGIN is None:
        planned.append(token_command(args.kubeconfig, args.context, args.token_duration))
    if args.dry_run:
        for cmd in planned:
            print("would run:", shlex.join(cmd))
        print(f"would write: {SETTINGS.name}, {CONNECTION_ENV.name}")
        return 0
    if native:
        connections, target = rc.connections(), f"the {rc.CONNECTION_TYPE} connection"
    else:
        if from_kubeconfig:
            server, ca_data = endpoint_from_kubeconfig(args.kubeconfig, args.context)
        else:
            server, ca_data = endpoint_from_cloud(json.loads(run(cloud_command())))
        token = "" if rc.EXEC_PLUGIN else run(token_command(args.kubeconfig, args.context, args.token_duration)).strip()
        connections, target = rc.connections(server=server, ca_data=ca_data, token=token), server
    write_settings(connections)
    write_private(CONNECTION_ENV, connection_env(connections, CONNECTION_ENV.read_text() if CONNECTION_ENV.exists() else ""))
{%- if cluster_id %}
    print(f"wrote {SETTINGS.name} and {CONNECTION_ENV.name} of the project root for {target} (connection {rc.CONNECTION_ID})")
    print("next: astro dev restart (or start), then trigger the check_remote_clusters DAG")
{%- else %}
    print(f"wrote {SETTINGS.name} and {CONNECTION_ENV.name} for {target} (connection {rc.CONNECTION_ID})")
    print("next: astro dev start, then trigger the check_remote_cluster DAG")
{%- endif %}
    return 0


if __name__ == "__main__":
    sys.exit(main())
