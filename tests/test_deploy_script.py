"""scripts/deploy.sh against the recording Astro CLI stand-in (tests/astro_cli_double), and the
generic cluster's token rotation with the cloud CLI stand-in's kubectl too.

SIMULATED: the Astro CLI and, for the rotation, kubectl. The stand-in keeps a model of the
deployment (secret environment variables, pools, the code it runs, whether you are signed in) and
records every call with whether it changed that model. The script, write_connection.py and the
files they write are real.

Idempotence, as chosen: secret variables are write-only in Astro (`variable list` shows their
keys, never their values), so the script cannot compare connection.env with what is loaded and
runs `variable update --load` every time; setting the same value again is recorded as no change.
The pool is compared (its slots are readable) and is not touched when equal. A deploy of the code
the deployment already runs is recorded as no change.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astro_cli_double import DEPLOYMENT_ID, WEBSERVER_URL, AstroDouble, deployment, signed_in
from cloud_cli_double import CliDouble
from conftest import CONFIG

SERVER = "https://ABC.gr7.us-east-1.eks.amazonaws.com"
WRITE_CONNECTION = """
import json, sys
sys.path.insert(0, ".")
from include import remote_cluster as rc
from scripts.write_connection import CONNECTION_ENV, connection_env, write_private
write_private(CONNECTION_ENV, connection_env(rc.connections(**json.loads(sys.argv[1]))))
"""
CONNECTION_KEY = "AIRFLOW_CONN_" + CONFIG["kubernetes_conn_id"].upper()
POOL_DESCRIPTION = f"Caps concurrent pods on the remote cluster {CONFIG['cluster_name']}"
VARIABLES = ["astro", "deployment", "variable", "update", "--deployment-id", DEPLOYMENT_ID, "--load", "--env",
             "connection.env", "--secret"]
POOL_CREATE = ["astro", "deployment", "pool", "create", "--deployment-id", DEPLOYMENT_ID, "--name", "remote_kpo", "--slots",
               "4", "--description", POOL_DESCRIPTION]
DEPLOY = ["astro", "deploy", DEPLOYMENT_ID]
READS = {"inspect": ["astro", "deployment", "inspect", "--deployment-id", DEPLOYMENT_ID, "--key", "metadata.webserver_url"],
         "variables": ["astro", "deployment", "variable", "list", "--deployment-id", DEPLOYMENT_ID],
         "pools": ["astro", "deployment", "pool", "list", "--deployment-id", DEPLOYMENT_ID]}


def jwt(**claims) -> str:
    import base64

    def b64(doc: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'RS256'})}.{b64(claims)}.c2lnbmF0dXJl"


def token(hours_left: float, lifetime_hours: float = 24) -> str:
    expires = time.time() + hours_left * 3600
    return jwt(sub="system:serviceaccount:airflow-jobs:airflow-kpo-runner", exp=int(expires),
               iat=int(expires - lifetime_hours * 3600))


class Deploy:
    def __init__(self, project: Path, astro: AstroDouble):
        self.project, self.astro = project, astro

    def env(self, **extra: str) -> dict:
        return dict(self.astro.env({k: v for k, v in os.environ.items() if k != "ASTRO_API_TOKEN"}), **extra)

    def run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["scripts/deploy.sh", *args], cwd=self.project, capture_output=True, text=True,
                              env=env or self.env(), timeout=120)

    def write_connection(self, **kube_config_args: str) -> None:
        subprocess.run([sys.executable, "-c", WRITE_CONNECTION, json.dumps(kube_config_args)], cwd=self.project,
                       check=True)

    def loaded(self) -> dict:
        """The deployment's variables as the model holds them, values parsed as JSON."""
        held = self.astro.state["deployments"][DEPLOYMENT_ID]["variables"]
        return {key: {"secret": v["secret"], "value": json.loads(v["value"])} for key, v in held.items()}

    def connection_env(self) -> dict:
        pairs = (item.split("=", 1) for item in shlex.split((self.project / "connection.env").read_text(), comments=True))
        return {key: json.loads(value) for key, value in pairs}


@pytest.fixture
def deploy(render, tmp_path):
    def make(cloud: str = "aws", state: dict | None = None, connection: dict | None = None) -> Deploy:
        project = tmp_path / "project"
        shutil.copytree(render({"cloud": cloud, "xcom": True}).path, project)
        d = Deploy(project, AstroDouble(tmp_path / "astro", signed_in() if state is None else state))
        if connection is not None:
            d.write_connection(**connection)
        return d
    return make


def filled(cloud: str = "aws") -> dict:
    found = {"server": SERVER, "ca_data": "Q0E="}
    return {**found, "token": token(20)} if cloud == "generic" else found


def planned(stdout: str) -> list[list[str]]:
    return [shlex.split(line.removeprefix("would run:")) for line in stdout.splitlines() if line.startswith("would run:")]


@pytest.mark.parametrize("cloud", ["aws", "generic"])
def test_dry_run_prints_the_plan_and_changes_nothing(deploy, cloud):
    d = deploy(cloud, connection=filled(cloud))
    before = d.astro.state
    done = d.run("--deployment-id", DEPLOYMENT_ID, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert planned(done.stdout) == [VARIABLES, POOL_CREATE, DEPLOY]
    assert d.astro.state == before and d.astro.changes() == []
    # Only read-only queries ran, each one printed.
    assert [c["argv"] for c in d.astro.calls()] == [READS["inspect"], READS["variables"], READS["pools"]]
    assert done.stderr.count("query: astro ") == len(d.astro.calls())
    assert f"variable {CONNECTION_KEY}: not in the deployment, created from connection.env" in done.stderr
    assert f"https://{WEBSERVER_URL}" in done.stdout and "check_remote_cluster" in done.stdout


@pytest.mark.parametrize("cloud", ["aws", "generic"])
def test_first_run_makes_exactly_the_planned_changes(deploy, cloud):
    d = deploy(cloud, connection=filled(cloud))
    plan = planned(d.run("--deployment-id", DEPLOYMENT_ID, "--dry-run").stdout)
    d.astro.reset_log()
    done = d.run("--deployment-id", DEPLOYMENT_ID)
    assert done.returncode == 0, done.stdout + done.stderr
    assert d.astro.changes() == [VARIABLES, POOL_CREATE, DEPLOY] == plan
    assert d.loaded() == {key: {"secret": True, "value": value} for key, value in d.connection_env().items()}
    assert list(d.loaded()) == [CONNECTION_KEY]
    held = d.astro.state["deployments"][DEPLOYMENT_ID]
    assert held["pools"]["remote_kpo"] == {"slots": 4, "description": POOL_DESCRIPTION}
    assert len(held["deploys"]) == 1
    deploy_call = next(c for c in d.astro.calls() if c["argv"] == DEPLOY)
    assert Path(deploy_call["cwd"]) == d.project, "astro deploy runs in the project folder"
    if cloud == "generic":
        assert "eyJ" not in done.stdout + done.stderr, "the token is never printed"
        assert "token: the ServiceAccount token in connection.env is valid until" in done.stderr


@pytest.mark.parametrize("cloud", ["aws", "generic"])
def test_second_run_changes_nothing(deploy, cloud):
    d = deploy(cloud, connection=filled(cloud))
    assert d.run("--deployment-id", DEPLOYMENT_ID).returncode == 0
    after_first = d.astro.state
    d.astro.reset_log()
    done = d.run("--deployment-id", DEPLOYMENT_ID)
    assert done.returncode == 0, done.stdout + done.stderr
    assert d.astro.changes() == []
    assert d.astro.state == after_first
    argvs = [c["argv"] for c in d.astro.calls()]
    assert VARIABLES in argvs, "secrets cannot be compared, so they are set again (recorded as no change)"
    assert not [a for a in argvs if a[:3] == ["astro", "deployment", "pool"] and a[3] != "list"], "an equal pool is not touched"
    assert "unchanged: pool remote_kpo (4 slots)" in done.stderr
    assert f"variable {CONNECTION_KEY}: in the deployment, set again" in done.stderr


def test_a_changed_connection_env_is_loaded_on_rerun(deploy):
    d = deploy("aws", connection=filled())
    assert d.run("--deployment-id", DEPLOYMENT_ID).returncode == 0
    d.write_connection(server="https://NEW.gr7.us-east-1.eks.amazonaws.com", ca_data="Q0E=")
    d.astro.reset_log()
    done = d.run("--deployment-id", DEPLOYMENT_ID)
    assert done.returncode == 0, done.stdout + done.stderr
    assert d.astro.changes() == [VARIABLES]
    kube_config = d.loaded()[CONNECTION_KEY]["value"]["extra"]["kube_config"]
    assert kube_config["clusters"][0]["cluster"]["server"] == "https://NEW.gr7.us-east-1.eks.amazonaws.com"


def test_a_pool_with_other_slots_and_a_plain_variable_are_put_right(deploy):
    held = deployment(pools={"remote_kpo": {"slots": 16, "description": ""}},
                      variables={CONNECTION_KEY: {"value": "{}", "secret": False}})
    d = deploy("aws", state=signed_in(**{DEPLOYMENT_ID: held}), connection=filled())
    done = d.run("--deployment-id", DEPLOYMENT_ID)
    assert done.returncode == 0, done.stdout + done.stderr
    update = ["astro", "deployment", "pool", "update", *POOL_CREATE[4:]]
    assert d.astro.changes() == [VARIABLES, update, DEPLOY]
    assert d.loaded()[CONNECTION_KEY]["secret"] is True, "a plain variable becomes a secret"
    assert d.astro.state["deployments"][DEPLOYMENT_ID]["pools"]["remote_kpo"]["slots"] == 4


def test_an_api_token_works_without_a_login(deploy):
    d = deploy("aws", state={**signed_in(), "logged_in": False, "api_tokens": ["deployment-api-token"]}, connection=filled())
    done = d.run("--deployment-id", DEPLOYMENT_ID, env=d.env(ASTRO_API_TOKEN="deployment-api-token"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert d.astro.changes() == [VARIABLES, POOL_CREATE, DEPLOY]


def last_error(done: subprocess.CompletedProcess) -> str:
    """The refusal, which must be one line after the queries that led to it."""
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("query: ") for line in lines[:-1]), done.stderr
    assert done.returncode == 1
    return lines[-1]


def test_refusals_are_one_line_naming_the_fix(deploy, tmp_path):
    d = deploy("aws")

    def run(env: dict | None = None) -> subprocess.CompletedProcess:
        return d.run("--deployment-id", DEPLOYMENT_ID, env=env)
    fix = "run scripts/setup_remote.sh (or python3 scripts/write_connection.py) first"
    assert last_error(run()) == f"ERROR: connection.env is missing: {fix}"
    d.write_connection()  # the example connection, as rendered
    placeholder = "https://cluster-endpoint.example.invalid"
    assert last_error(run()) == f"ERROR: connection.env still has the example endpoint {placeholder}: {fix}"
    assert d.astro.calls() == [], "local refusals come before any call to Astro"

    d.write_connection(**filled())
    no_astro = tmp_path / "no-astro"
    no_astro.mkdir()
    (no_astro / "python3").symlink_to(sys.executable)
    path = f"{no_astro}:/usr/bin:/bin"
    assert shutil.which("astro", path=path) is None
    assert last_error(run(env=dict(d.env(), PATH=path))) == (
        "ERROR: astro: not installed or not on PATH; install the Astro CLI "
        "(https://www.astronomer.io/docs/astro/cli/install-cli) and run again")

    d.astro.state = {**d.astro.state, "logged_in": False}
    assert last_error(run()) == "ERROR: not signed in to Astro: run astro login (or export ASTRO_API_TOKEN) and run again"
    assert last_error(run(env=d.env(ASTRO_API_TOKEN="revoked"))).startswith("ERROR: not signed in to Astro")
    d.astro.state = {**d.astro.state, "logged_in": True}
    other = d.run("--deployment-id", "clx0someoneelse")
    assert last_error(other) == (
        "ERROR: astro deployment inspect ... failed: Error: the Deployment specified was not found in this workspace. "
        "Your account or API Key may not have access to the deployment specified")
    assert d.astro.changes() == []


@pytest.mark.parametrize(("args", "message"), [
    ([], "ERROR: --deployment-id: required; it is on the deployment's page in Astro (Details > ID) or in astro deployment list"),
    (["--deployment-id", "--dry-run"], "ERROR: --deployment-id: needs a value; see --help"),
    (["--deployment-id", "cl x;rm"],
     "ERROR: --deployment-id: 'cl x;rm' is not a deployment id (letters, digits, '-' and '_' only)"),
    (["--deployment-id", DEPLOYMENT_ID, "--force"], "ERROR: --force: unknown option; allowed: --deployment-id, --dry-run, "
                                                    "--rotate-token, --token-duration, --kubeconfig, --context, --help"),
    (["--deployment-id", DEPLOYMENT_ID, "--token-duration", "12h"], "ERROR: --token-duration: only with --rotate-token"),
    (["--deployment-id", DEPLOYMENT_ID, "--rotate-token"], "ERROR: --rotate-token: only generic clusters carry a ServiceAccount "
     "token; on aws the exec plugin makes a fresh token for every call, so there is nothing to rotate"),
    (["--deployment-id", DEPLOYMENT_ID, "--rotate-token", "--token-duration", "1 day"],
     "ERROR: --token-duration: '1 day' is not a duration; use e.g. 24h, 12h or 90m (kubectl create token --duration)"),
])
def test_bad_options_are_one_line(deploy, args, message):
    d = deploy("aws", connection=filled())
    done = d.run(*args)
    assert done.returncode == 1 and done.stderr.strip() == message
    assert d.astro.calls() == []


def test_help_names_every_option(deploy):
    done = deploy("aws").run("--help")
    assert done.returncode == 0
    for option in ("--deployment-id", "--dry-run", "--rotate-token", "--token-duration", "--kubeconfig", "--context"):
        assert option in done.stdout


def test_generic_token_expired_is_refused_and_one_running_out_is_a_warning(deploy):
    d = deploy("generic", connection={**filled("generic"), "token": token(-1)})
    rotate = f"scripts/deploy.sh --deployment-id {DEPLOYMENT_ID} --rotate-token"
    refused = d.run("--deployment-id", DEPLOYMENT_ID)
    assert last_error(refused).startswith("ERROR: the ServiceAccount token in connection.env expired at ")
    assert last_error(refused).endswith(f": {rotate}") and d.astro.calls() == []
    d.write_connection(**{**filled("generic"), "token": token(2, 24)})
    done = d.run("--deployment-id", DEPLOYMENT_ID)
    assert done.returncode == 0, done.stderr
    assert "WARNING: the ServiceAccount token in connection.env has 2.0 h of its 24.0 h left" in done.stderr
    assert done.stderr.count(rotate) == 1


# The rotation: the cloud CLI stand-in's kubectl mints the token (it needs the ServiceAccount
# applied), the Astro stand-in takes the variable.
@pytest.fixture
def rotation(deploy, tmp_path):
    d = deploy("generic", connection={**filled("generic"), "token": token(1)})
    assert d.run("--deployment-id", DEPLOYMENT_ID).returncode == 0
    d.astro.reset_log()
    namespace, account = CONFIG["namespace"], "airflow-kpo-runner"
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}}
    cluster = CliDouble(tmp_path / "cluster", {"k8s": {f"ServiceAccount/{namespace}/{account}": sa}})
    (d.project / "admin.kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    return d, cluster, cluster.env(d.env())


def test_rotation_dry_run_plans_the_token_and_the_variable_only(rotation):
    d, cluster, env = rotation
    before = d.connection_env()
    done = d.run("--deployment-id", DEPLOYMENT_ID, "--rotate-token", "--kubeconfig", "admin.kubeconfig",
                 "--token-duration", "12h", "--dry-run", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = planned(done.stdout)
    assert plan[0][:3] == ["kubectl", "--kubeconfig", "admin.kubeconfig"] and plan[0][3:5] == ["config", "view"]
    assert plan[1] == ["kubectl", "--kubeconfig", "admin.kubeconfig", "create", "token", "airflow-kpo-runner",
                       "--namespace", CONFIG["namespace"], "--duration", "12h"]
    assert plan[2:] == [VARIABLES]
    assert cluster.calls() == [] and d.astro.changes() == [] and d.connection_env() == before


def test_rotation_mints_writes_and_loads_the_token_and_deploys_nothing(rotation):
    d, cluster, env = rotation
    old = d.loaded()[CONNECTION_KEY]["value"]
    done = d.run("--deployment-id", DEPLOYMENT_ID, "--rotate-token", "--kubeconfig", "admin.kubeconfig",
                 "--token-duration", "12h", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (mint,) = [c["argv"] for c in cluster.calls() if "token" in c["argv"]]
    assert mint[mint.index("--duration") + 1] == "12h"
    assert d.astro.changes() == [VARIABLES], "only the variable: no pool call, no deploy"
    new = d.loaded()[CONNECTION_KEY]
    assert new["secret"] is True and new["value"] == d.connection_env()[CONNECTION_KEY] != old
    user = new["value"]["extra"]["kube_config"]["users"][0]["user"]
    assert user["token"] not in done.stdout + done.stderr, "the token is never printed"
    assert stat.S_IMODE((d.project / "connection.env").stat().st_mode) == 0o600
    assert "nothing to deploy for a new token" in done.stdout


def test_setup_remote_passes_the_token_duration_through(deploy, tmp_path):
    d = deploy("generic")
    cluster = CliDouble(tmp_path / "cluster", {})
    (d.project / "admin.kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    args = ["scripts/setup_remote.sh", "--kubeconfig", "admin.kubeconfig", "--context", "admin"]
    env = cluster.env(dict(os.environ))
    done = subprocess.run([*args, "--token-duration", "2h"], cwd=d.project, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (mint,) = [c["argv"] for c in cluster.calls() if "token" in c["argv"]]
    assert mint[mint.index("--duration") + 1] == "2h"
    bad = subprocess.run([*args, "--token-duration", "2 hours"], cwd=d.project, capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("ERROR: --token-duration: '2 hours' is not a duration; use e.g. 24h, 12h or 90m "
                                  "(kubectl create token --duration)")
    helped = subprocess.run(["scripts/setup_remote.sh", "--help"], cwd=d.project, capture_output=True, text=True, env=env)
    assert "--token-duration" in helped.stdout


# A project with added clusters (clusters/<pkg>/, as cookiecutter --directory cluster places them):
# their connections are lines of the same connection.env, and each has its own pool.
PART_CONNECTION = """
import json, sys
sys.path.insert(0, ".")
from include import remote_cluster as rc
from scripts.write_connection import CONNECTION_ENV, connection_env, write_private
write_private(CONNECTION_ENV, connection_env(rc.connections(**json.loads(sys.argv[1])), CONNECTION_ENV.read_text()))
"""


def test_every_added_clusters_pool_is_created_then_left_alone(deploy, render):
    d = deploy("aws", connection=filled())
    parts = {"gke-gpu": "gcp", "sa-two": "generic"}
    for cluster_id, cloud in parts.items():
        pkg = cluster_id.replace("-", "_")
        part = render({"cloud": cloud, "xcom": True, "_cluster_id": cluster_id, "cluster_name": cluster_id,
                       "kubernetes_conn_id": f"remote_kubernetes_{pkg}"}).path
        shutil.copytree(part, d.project / "clusters" / pkg)
    creates = [[*POOL_CREATE[:7], f"remote_kpo_{cluster_id.replace('-', '_')}", *POOL_CREATE[8:11],
                f"Caps concurrent pods on the remote cluster {cluster_id}"] for cluster_id in parts]

    # A cluster whose connection is not in connection.env yet is named, with its own fix.
    refused = d.run("--deployment-id", DEPLOYMENT_ID, "--dry-run")
    assert refused.returncode == 1
    assert last_error(refused) == (
        "ERROR: connection.env has no AIRFLOW_CONN_REMOTE_KUBERNETES_GKE_GPU (cluster gke-gpu): run "
        "clusters/gke_gpu/scripts/setup_remote.sh (or python3 clusters/gke_gpu/scripts/write_connection.py) first")
    for cluster_id in parts:
        args = {**filled(parts[cluster_id]), "server": f"https://{cluster_id}.example:443"}
        subprocess.run([sys.executable, "-c", PART_CONNECTION, json.dumps(args)], check=True,
                       cwd=d.project / "clusters" / cluster_id.replace("-", "_"))
    assert set(d.connection_env()) == {CONNECTION_KEY, "AIRFLOW_CONN_REMOTE_KUBERNETES_GKE_GPU",
                                       "AIRFLOW_CONN_REMOTE_KUBERNETES_SA_TWO"}

    plan = planned(d.run("--deployment-id", DEPLOYMENT_ID, "--dry-run").stdout)
    assert plan == [VARIABLES, POOL_CREATE, *creates, DEPLOY]
    d.astro.reset_log()
    done = d.run("--deployment-id", DEPLOYMENT_ID)
    assert done.returncode == 0, done.stdout + done.stderr
    assert d.astro.changes() == plan
    # The next step names the preflight and the example that cover every cluster.
    assert "Dags > check_remote_clusters > Trigger" in done.stdout and "/dags/check_remote_clusters/dagRuns" in done.stdout
    assert "trigger remote_kpo_clusters." in done.stdout
    # Every cluster's connection is loaded as the CLI reads the file (gcp's has an apostrophe in it).
    assert d.loaded() == {key: {"secret": True, "value": value} for key, value in d.connection_env().items()}
    pools = d.astro.state["deployments"][DEPLOYMENT_ID]["pools"]
    assert {"remote_kpo", "remote_kpo_gke_gpu", "remote_kpo_sa_two"} <= set(pools)
    assert pools["remote_kpo_gke_gpu"] == {"slots": 4, "description": "Caps concurrent pods on the remote cluster gke-gpu"}
    assert "of cluster sa-two in connection.env is valid until" in done.stderr
    reads = [c["argv"] for c in d.astro.calls() if c["argv"][:4] == READS["pools"][:4]]
    assert reads == [READS["pools"]], "the pools are listed once"

    d.astro.reset_log()
    again = d.run("--deployment-id", DEPLOYMENT_ID)
    assert again.returncode == 0 and d.astro.changes() == []
    for pool in ("remote_kpo", "remote_kpo_gke_gpu", "remote_kpo_sa_two"):
        assert f"unchanged: pool {pool} (4 slots)" in again.stderr
