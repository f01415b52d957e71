#!/usr/bin/env python3
"""Write the Airflow connection for the remote cluster, so nobody hand-edits YAML or JSON.

It asks the cloud CLI (or an existing kubeconfig) for the API endpoint and CA, builds the
kubeconfig from include/remote_cluster.py, and writes it twice:

  airflow_settings.yaml  the connection `astro dev start` creates locally (managed block)
  connection.env         AIRFLOW_CONN_<ID>=<json> to load into the Astro deployment:
                         astro deployment variable create --deployment-id <id> \\
                             --load --env connection.env --secret

Both files are in .gitignore and .dockerignore. Python 3.9+ standard library only.

  python3 scripts/write_connection.py                      # ask the cloud CLI
  python3 scripts/write_connection.py --kubeconfig PATH [--context NAME]
  python3 scripts/write_connection.py --dry-run            # print the commands, write nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from include import remote_cluster as rc  # noqa: E402  (needs the project on sys.path)

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


def write_settings(connections: list[tuple[str, str, dict]]) -> None:
    text = SETTINGS.read_text() if SETTINGS.exists() else SETTINGS_SKELETON
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise SystemExit(f"ERROR: {SETTINGS.name}: the managed connection block is gone; restore its "
                         "two marker lines or delete the file and run this script again")
    write_private(SETTINGS, text[:start] + settings_block(connections) + text[stop + len(END):])


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (the generic path holds a token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def connection_env(connections: list[tuple[str, str, dict]]) -> str:
    lines = ["# Load into the deployment as a secret (see README); never commit."]
    for conn_id, conn_type, extra in connections:
        value = json.dumps({"conn_type": conn_type, "extra": extra}, separators=(",", ":"))
        lines.append(f"AIRFLOW_CONN_{conn_id.upper()}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the remote cluster's Airflow connection.")
    parser.add_argument("--kubeconfig", help="read endpoint and CA from this kubeconfig instead of the cloud CLI")
    parser.add_argument("--context", help="kubeconfig context to read (default: current)")
    parser.add_argument("--token-duration", default=TOKEN_DURATION,
                        help="generic clusters: lifetime of the ServiceAccount token (default 24h)")
    parser.add_argument("--placeholder", action="store_true",
                        help="write the example connection without asking anything (used at render time)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, write nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    write_private(CONNECTION_ENV, connection_env(connections))
    print(f"wrote {SETTINGS.name} and {CONNECTION_ENV.name} for {target} (connection {rc.CONNECTION_ID})")
    print("next: astro dev start, then trigger the check_remote_cluster DAG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
