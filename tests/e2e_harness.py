"""Wire a rendered project to the API double and run its DAGs with ``dag.test()``.

What is real: the rendered project (DAGs, include/, scripts/write_connection.py, k8s/ and, on
AWS, the trust policy and access entry), Airflow 3.3 with cncf-kubernetes, the kubernetes
clients, the rendered kubeconfig exec plugin (on GKE the installed gke-gcloud-auth-plugin
binary itself, on Application Default Credentials) and TLS verification.
What is simulated: the cluster (kube_api_double), STS AssumeRole (kube_api_double.sts), the EKS
control-plane API for DescribeCluster and node groups (kube_api_double.eks, which enforces the
rendered aws/runner-policy.json), Google's OAuth2 token endpoint (kube_api_double.google: the
plugin posts a JWT signed with a service-account key made here for the project's
RUNNER_IDENTITY; GOOGLE_APPLICATION_CREDENTIALS names that key, SSL_CERT_FILE the double's CA,
HOME a per-test folder), the
`aws`/`gcloud`/`kubectl` CLIs that scripts/write_connection.py asks for the endpoint and CA (they
answer with the double's), and the image: the plugin path /usr/local/airflow is replaced by the
project folder because no image runs here, and the DAG processes see only the packages the image
would hold (tests/image_closure.py). Nothing else in the connection is changed.

A multi-cluster project (``Clusters``): the primary and every cluster added with the template's
add command (``add_cluster``: `cookiecutter <template> --directory cluster`), each served by its
own doubles from its own k8s/ (the primary's k8s/, clusters/<pkg>/k8s/), each cluster's own
scripts/write_connection.py writing into the project's one connection.env; the Airflow env carries
every connection. ``run(..., executor=True)`` runs the DAG through the LocalExecutor with an
execution API server and a triggerer (``AirflowServices``), so that tasks without dependencies
run at once as they do in a deployment (``dag.test()`` alone runs them one after the other).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from image_closure import gated_env
from kube_api_double import ApiDouble
from kube_api_double.auth import AwsCredential, EksAuthenticator
from kube_api_double.eks import EksDouble
from kube_api_double.google import GoogleTokenDouble
from kube_api_double.sts import StsDouble

IMAGE_HOME = "/usr/local/airflow"
ASTRO_KEY, ASTRO_SECRET = "AKIAASTROWORKLOAD001", "astro-workload-secret"
# Runs one DAG with dag.test() and prints its states (and closes an upstream race: see the file).
RUN_DAG = Path(__file__).resolve().parent / "dag_run.py"
FAKE_CLI = """#!{python}
import json, sys
args = sys.argv[1:]
if args[:3] == ["container", "clusters", "describe"]:  # gcloud, in its own shape: endpoint without scheme
    flags = dict(zip(args[4::2], args[5::2]))
    if [args[3], flags.get("--location"), flags.get("--project"), flags.get("--format")] != {gke!r}:
        sys.exit(f"ERROR: (gcloud.container.clusters.describe) not the project's cluster: {{args}}")
    print(json.dumps({{"name": args[3], "status": "RUNNING", "endpoint": {url!r}.removeprefix("https://"),
                      "masterAuth": {{"clusterCaCertificate": {ca!r}}}}}))
elif "token" in args:
    print({token!r})
elif "view" in args:
    print(json.dumps({{"clusters": [{{"name": "c", "cluster": {{"server": {url!r}, "certificate-authority-data": {ca!r}}}}}]}}))
else:
    print(json.dumps({{"cluster": {{"endpoint": {url!r}, "certificateAuthority": {{"data": {ca!r}}}}}}}))
"""
# Clouds whose tokens are made here by a real plugin against a double (gcp: the kubeconfig path
# only; the native GKEStartPodOperator calls the GKE API, which has no double).
TOKENS_MADE_HERE = ("aws", "gcp", "generic")


@dataclass
class RunResult:
    state: str
    log: str
    returncode: int
    tasks: dict[str, str] = field(default_factory=dict)  # task_id (group.task) -> its task instance's state
    run_id: str = ""

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


@dataclass
class Cluster:
    """One rendered project, its Role as deployed, the double serving it, and the Airflow env."""

    project: Path
    airflow_home: Path
    work: Path
    role: dict | None = None  # override the rendered Role (least-privilege tests)
    double_options: dict = field(default_factory=dict)  # pending_seconds, extra_run_seconds
    sa_token_ttl: float = 3600
    eks_api_options: dict = field(default_factory=dict)  # polls_to_active, create_fails, ...
    extra_bindings: list[dict] = field(default_factory=list)  # RoleBindings applied besides the rendered one
    google_identity: str | None = None  # GKE: whose key ADC holds (default: the project's RUNNER_IDENTITY)
    trust_policy: dict | None = None  # EKS: the runner role's trust as applied (default: aws/trust-policy.json)
    aws_caller: str | None = None  # EKS: who holds the signing credentials (default: the Astro workload identity)
    # The namespace's LimitRange and ResourceQuota as applied (default: k8s/resource-defaults.yaml and
    # k8s/resourcequota.yaml as rendered; [] for none).
    namespace_limits: list[dict] | None = None
    # A cluster of a multi-cluster project (Clusters): its folder in the project ("" the primary,
    # "clusters/<pkg>" an added one), and whether to copy the project (Clusters copies it once).
    part: str = ""
    copy: bool = True
    double: ApiDouble = field(init=False)
    sts: StsDouble | None = field(init=False, default=None)
    eks_api: EksDouble | None = field(init=False, default=None)
    google: GoogleTokenDouble | None = field(init=False, default=None)

    def __post_init__(self):
        import importlib.util
        import shutil

        # Work on a copy: write_connection.py writes connection.env and airflow_settings.yaml,
        # and the rendered project is shared with other tests.
        if self.copy:
            copy = self.work / "cluster-project" / self.project.name
            shutil.copytree(self.project, copy)
            self.project = copy
        self.folder = self.project / self.part  # the cluster's own include/, k8s/, aws/, scripts/

        spec = importlib.util.spec_from_file_location(f"rc_{id(self)}", self.folder / "include" / "remote_cluster.py")
        self.rc = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.rc)

    def manifest(self, name: str) -> dict:
        return yaml.safe_load((self.folder / "k8s" / f"{name}.yaml").read_text())

    def __enter__(self) -> Cluster:
        rc = self.rc
        eks = None
        if rc.CLOUD == "aws":
            entry = json.loads((self.folder / "aws/access-entry.json").read_text())
            trust = self.trust_policy or json.loads((self.folder / "aws/trust-policy.json").read_text())
            eks = EksAuthenticator(rc.CLUSTER_NAME, rc.AWS_REGION,
                                   access_entries={entry["principalArn"]: entry["kubernetesGroups"]})
            astro = self.aws_caller or trust["Statement"][0]["Principal"]["AWS"]
            eks.credentials[ASTRO_KEY] = AwsCredential(ASTRO_SECRET, astro)
            self.sts = StsDouble(eks, trust, rc.RUNNER_ROLE_ARN, {ASTRO_KEY: astro}).start()
            policy = self.folder / "aws" / "runner-policy.json"
            if policy.exists():  # the native operator or the GPU DAG call the EKS API
                self.eks_api = EksDouble(eks, json.loads(policy.read_text()), role_arn=rc.RUNNER_ROLE_ARN,
                                         account=rc.AWS_ACCOUNT_ID, endpoint="",
                                         ca_data="", **self.eks_api_options).start()
                self.double_options.setdefault("nodes", self.eks_api.node_groups_ready)
        if rc.CLOUD == "gcp":  # gke-gcloud-auth-plugin signs in with the runner's service-account key
            self.google = GoogleTokenDouble().start()
            (self.work / "google").mkdir(parents=True, exist_ok=True)
            self.google_key = self.google.write_key_file(self.google_identity or rc.RUNNER_IDENTITY,
                                                         self.work / "google" / "adc-key.json", rc.GCP_PROJECT_ID)
        self.double = ApiDouble(rc.REMOTE_NAMESPACE, [self.role or self.manifest("role")],
                                [self.manifest("rolebinding"), *self.extra_bindings],
                                eks=eks, google=self.google, namespace_limits=self._namespace_limits(),
                                namespace_labels=self.manifest("namespace")["metadata"]["labels"],
                                **self.double_options).start()
        if self.eks_api:
            self.eks_api.endpoint, self.eks_api.ca_data = self.double.url, self.double.ca_data
        self.connections = self._write_connection()
        return self

    def _namespace_limits(self) -> list[dict]:
        if self.namespace_limits is not None:
            return self.namespace_limits
        names = ("resource-defaults", "resourcequota")
        return [self.manifest(name) for name in names if (self.folder / "k8s" / f"{name}.yaml").exists()]

    def __exit__(self, *exc):
        self.double.stop()
        for double in (self.sts, self.eks_api, self.google):
            if double:
                double.stop()

    def _write_connection(self) -> str:
        """Run the cluster's own scripts/write_connection.py against CLI stand-ins; its connections
        as they are in the project's connection.env (which also holds other clusters' lines)."""
        bin_dir = self.work / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        token = self.double.sa_tokens.mint(self.rc.REMOTE_NAMESPACE, getattr(self.rc, "SERVICE_ACCOUNT", "x"), self.sa_token_ttl)
        rc = self.rc
        gke = [rc.CLUSTER_NAME, rc.GCP_LOCATION, rc.GCP_PROJECT_ID, "json"] if rc.CLOUD == "gcp" else None
        for name in ("aws", "gcloud", "kubectl"):
            path = bin_dir / name
            path.write_text(FAKE_CLI.format(python=sys.executable, token=token, url=self.double.url, ca=self.double.ca_data,
                                            gke=gke))
            path.chmod(0o755)
        args = ["--kubeconfig", "admin.kubeconfig"] if self.rc.EXEC_PLUGIN is None else []
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        subprocess.run([sys.executable, "scripts/write_connection.py", *args], cwd=self.folder, env=env,
                       check=True, capture_output=True)
        own = {f"AIRFLOW_CONN_{conn_id.upper()}" for conn_id, _, _ in self.rc.connections()}
        connections = {}
        for assignment in shlex.split((self.project / "connection.env").read_text(), comments=True):
            name, _, value = assignment.partition("=")
            if name not in own:  # another cluster's (a multi-cluster project)
                continue
            conn = json.loads(value.replace(IMAGE_HOME, str(self.project)))
            if conn["conn_type"] == "aws" and self.eks_api:  # boto3 reaches the doubles, nothing else changes
                conn["extra"]["service_config"] = {"sts": {"endpoint_url": self.sts.url},
                                                   "eks": {"endpoint_url": self.eks_api.url}}
            connections[name] = json.dumps(conn)
        return connections

    @property
    def connection(self) -> str:
        return self.connections[f"AIRFLOW_CONN_{self.rc.KUBERNETES_CONN_ID.upper()}"]

    def env(self, **extra: str) -> dict:
        return dag_env(self.project, self.airflow_home, [self], extra)

    def cloud_env(self) -> dict:
        """What the Airflow processes need for this cluster's credentials (the doubles' side)."""
        env = {}
        if self.sts:  # the Astro deployment's workload identity, as fake static credentials
            env.update(AWS_ACCESS_KEY_ID=ASTRO_KEY, AWS_SECRET_ACCESS_KEY=ASTRO_SECRET,
                       AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true")
            if self.rc.POD_OPERATOR != "native":
                # include/kube_auth/eks_token.py's AssumeRole; the native operator's goes through the
                # aws connection (service_config), and its token must name the real regional STS host.
                env.update(AWS_ENDPOINT_URL_STS=self.sts.url)
            home = self.work / "home"  # eks_token.py's token cache (~/.kube/cache) stays inside this test
            home.mkdir(exist_ok=True)
            env.update(HOME=str(home))
        if self.google:  # Application Default Credentials = the runner's key; the token endpoint is the double
            home = self.work / "home"  # the plugin's cache (~/.kube) stays inside this test
            home.mkdir(exist_ok=True)
            env.update(GOOGLE_APPLICATION_CREDENTIALS=str(self.google_key), SSL_CERT_FILE=str(self.google.ca_file),
                       HOME=str(home))
        return env

    def start(self, dag_id: str, logical_date: str | None = None, **env: str) -> subprocess.Popen:
        return start_dag(self.project, self.env(**env), dag_id, logical_date)

    def run(self, dag_id: str, timeout: float = 600, logical_date: str | None = None, **env: str) -> RunResult:
        process = self.start(dag_id, logical_date, **env)
        return finish(process, timeout)


def dag_env(project: Path, airflow_home: Path, clusters: list[Cluster], extra: dict) -> dict:
    """The Airflow processes' environment: the project's DAGs, every cluster's connections and
    credentials, only the image's packages."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_", "KPO_", "GOOGLE_", "CLOUDSDK_"))}
    env.update(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(project / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=str(project),
        # As in the image: the python3.X that EksPodOperator's kubeconfig runs is Airflow's own.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    for cluster in clusters:
        env.update(cluster.connections)
    credentials: dict = {}
    for cluster in clusters:
        clash = {k for k, v in cluster.cloud_env().items() if credentials.get(k, v) != v and k != "HOME"}
        assert not clash, f"two clusters need different values of {clash} (one STS/Google double per env)"
        credentials.update(cluster.cloud_env())
    env.update(credentials)
    env.update(extra)
    # Only what the image holds: DAGs, triggers and exec plugins see Airflow, the runtime's
    # providers and requirements.txt (tests/image_closure.py), not the rest of this venv.
    return gated_env(env, project / "requirements.txt")


def start_dag(project: Path, env: dict, dag_id: str, logical_date: str | None = None) -> subprocess.Popen:
    args = [sys.executable, str(RUN_DAG), str(project / "dags"), dag_id, *([logical_date] if logical_date else [])]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant: Airflow's task supervisor puts
    each task runner in a process group of its own, so the group alone is not the whole run."""
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def finish(process: subprocess.Popen, timeout: float = 600, context=None) -> RunResult:
    """Wait for a DAG run started by start_dag(). A run that outlives ``timeout`` is stopped (its
    whole process tree, so no worker of it lingers into later tests) and fails the test with the
    tail of its own output and of ``context()`` (e.g. the api-server and triggerer logs): a hang
    then says where it hung instead of only that it did."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # something outside the tree still holds the pipe
            output = "(no output: the pipe stayed open after the run was killed)"
        extra = context() if context else ""
        raise AssertionError(f"the DAG run did not finish in {timeout:.0f} s; its last output:\n{output[-8000:]}"
                             f"{extra}") from None
    state = next((line.split()[-1] for line in output.splitlines() if line.startswith("DAG_RUN_STATE")), "error")
    tasks = dict(line.split()[1:3] for line in output.splitlines() if line.startswith("TASK_STATE "))
    run_id = next((line.split()[-1] for line in output.splitlines() if line.startswith("DAG_RUN_ID ")), "")
    return RunResult(state=state, log=output, returncode=process.returncode, tasks=tasks, run_id=run_id)


def variant(project: Path, tmp: Path, *, deferrable: bool = True, retries: int | None = None,
            upstream_operator: bool = False, retry_delay: int | None = None,
            execution_timeout: int | None = None) -> Path:
    """A copy of the project with remote_kpo's mode, retries or operator changed, and nothing else.

    retries=0 keeps a deliberately failing run from waiting out two one-minute retry delays;
    upstream_operator=True uses the provider's KubernetesPodOperator instead of include/remote_pod.py;
    retry_delay and execution_timeout (seconds) replace the DAG's one minute and one hour."""
    import shutil

    target = tmp / f"variant-{deferrable}-{retries}-{upstream_operator}-{retry_delay}-{execution_timeout}" / project.name
    shutil.copytree(project, target)
    dag = target / "dags" / "remote_kpo.py"
    text = dag.read_text()
    def swap(old: str, new: str) -> str:
        assert old in text, f"variant(): {old!r} is no longer in remote_kpo.py"
        return text.replace(old, new)

    if not deferrable:
        text = swap("deferrable=True,", "deferrable=False,")
    if retries is not None:
        text = swap('default_args={"retries": 2,', f'default_args={{"retries": {retries},')
    if retry_delay is not None:
        text = swap('"retry_delay": timedelta(minutes=1)}', f'"retry_delay": timedelta(seconds={retry_delay})}}')
    if execution_timeout is not None:
        text = swap("execution_timeout=timedelta(hours=1),", f"execution_timeout=timedelta(seconds={execution_timeout}),")
    if upstream_operator:
        text = swap("from include.remote_pod import CLUSTER_ARGS, RemotePodOperator",
                            "from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator\n"
                            "from include.remote_pod import CLUSTER_ARGS")
        text = swap("RemotePodOperator(", "KubernetesPodOperator(")
    dag.write_text(text)
    return target


def migrate(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    return home


# -- multi-cluster projects ------------------------------------------------------------------------

def add_cluster(project: Path, template: Path, answers: dict) -> subprocess.CompletedProcess:
    """The template's add command, run in the project as its README says:
    `cookiecutter <template> --directory cluster --no-input key=value ...`."""
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    args = [f"{key}={'yes' if value is True else 'no' if value is False else value}" for key, value in answers.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KPO_"))}
    config = project.parent / ".cookiecutter-config.yaml"  # the user's replay folder stays untouched
    config.write_text(json.dumps({"replay_dir": str(project.parent / ".cookiecutter-replay"),
                                  "cookiecutters_dir": str(project.parent / ".cookiecutters")}))
    env["COOKIECUTTER_CONFIG"] = str(config)
    done = subprocess.run([str(cookiecutter), str(template), "--directory", "cluster", "--no-input", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"add {answers}: {done.stdout}\n{done.stderr}"
    return done


def cluster_parts(project: Path) -> dict[str, str]:
    """{cluster name: its folder in the project}: the primary ("") first, then each added one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("primary_rc", project / "include" / "remote_cluster.py")
    primary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(primary)
    parts = {primary.CLUSTER_NAME: ""}
    for found in sorted((project / "clusters").glob("*/cluster.json")):
        parts[json.loads(found.read_text())["answers"]["cluster_id"]] = f"clusters/{found.parent.name}"
    return parts


class Clusters:
    """A multi-cluster project wired to one set of doubles per cluster (see the module docstring).

    ``options``: per cluster name, the keyword arguments of its ``Cluster`` (role=, double_options=,
    namespace_limits=, ...), e.g. ``{"eks-main": {"role": EMPTY_ROLE}}``."""

    def __init__(self, project: Path, airflow_home: Path, work: Path, options: dict[str, dict] | None = None):
        import shutil

        self.project = work / "clusters-project" / project.name  # one copy: connection.env is shared
        shutil.copytree(project, self.project)
        self.airflow_home = airflow_home
        self.work = work
        options = options or {}
        parts = cluster_parts(self.project)
        unknown = set(options) - set(parts)
        assert not unknown, f"no such cluster in the project: {unknown} (it has {list(parts)})"
        self.members = {name: Cluster(self.project, airflow_home, work / f"cluster-{i}", part=part, copy=False,
                                      **options.get(name, {}))
                        for i, (name, part) in enumerate(parts.items())}
        self._stack = contextlib.ExitStack()

    def __getitem__(self, name: str) -> Cluster:
        return self.members[name]

    def __enter__(self) -> Clusters:
        with contextlib.ExitStack() as stack:
            for member in self.members.values():  # each writes its own lines into connection.env
                stack.enter_context(member)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc):
        self._stack.close()

    @property
    def connections(self) -> dict[str, str]:
        return {k: v for member in self.members.values() for k, v in member.connections.items()}

    def env(self, **extra: str) -> dict:
        return dag_env(self.project, self.airflow_home, list(self.members.values()), extra)

    def run(self, dag_id: str, timeout: float = 600, executor: bool = False, **env: str) -> RunResult:
        """Run one DAG. executor=False: ``dag.test()``, tasks one after another in one process.
        executor=True: through the LocalExecutor, an execution API server and a triggerer, tasks
        (and deferred pods) at once; the result's log then holds the task and trigger logs."""
        if not executor:
            return finish(start_dag(self.project, self.env(**env), dag_id), timeout)
        with AirflowServices(self.env(**env), self.work / "services") as services:
            def context() -> str:
                return services.tails() + task_logs(self.airflow_home, dag_id, "*")[-8000:]
            result = finish(start_dag(self.project, services.env, dag_id), timeout, context)
        result.log += task_logs(self.airflow_home, dag_id, result.run_id)
        return result


class AirflowServices:
    """An execution API server and a triggerer for one environment (and AIRFLOW_HOME), so that
    ``dag.test(use_executor=True)`` runs tasks in LocalExecutor workers and deferred tasks'
    triggers in a triggerer, as a deployment does. Stopped (their process groups) on exit."""

    def __init__(self, env: dict, work: Path, parallelism: int = 8):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.env = env | {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),  # the same for all: tokens made by one, read by another
            "AIRFLOW__API__WORKERS": "1",
            "KPO_TEST_USE_EXECUTOR": "1",
        }
        self.work = work
        self.port = port
        self.processes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> AirflowServices:
        self.work.mkdir(parents=True, exist_ok=True)
        commands = {"api-server": ["api-server", "--apps", "execution", "--host", "127.0.0.1", "--port", str(self.port),
                                   "--workers", "1"],
                    "triggerer": ["triggerer", "--skip-serve-logs"]}
        try:
            for name, args in commands.items():
                with open(self.work / f"{name}.log", "ab") as out:
                    self.processes[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env,
                                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_for_api_server()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_for_api_server(self, timeout: float = 180) -> None:
        import urllib.error
        import urllib.request

        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/execution/health", timeout=2).close()
                return
            except (urllib.error.URLError, OSError):
                pass
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited: {self.log(name)[-3000:]}"
            assert time.time() < deadline, f"api-server not up in {timeout} s: {self.log('api-server')[-3000:]}"
            time.sleep(0.3)

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, size: int = 6000) -> str:
        """The end of each service's log, each under a '=== <name> ===' line."""
        return "".join(f"\n=== {name} (exit {process.poll()}) ===\n{self.log(name)[-size:]}"
                       for name, process in self.processes.items())

    def __exit__(self, *exc):
        stop_groups(self.processes.values())


def stop_groups(processes) -> None:
    """SIGTERM each service's process group, then SIGKILL the groups still there after 30 s."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def task_logs(airflow_home: Path, dag_id: str, run_id: str) -> str:
    """The task (and trigger) log files of one run ("*": of every run), each under a '=== <file> ===' line."""
    folder = airflow_home / "logs" / f"dag_id={dag_id}"
    folder = folder if run_id == "*" else folder / f"run_id={run_id}"
    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()) if run_id else []:
        parts.append(f"\n=== {path.relative_to(folder)} ===\n{path.read_text(errors='replace')}")
    return "".join(parts)


def template_copy(target: Path) -> Path:
    """A copy of this working tree's template files (git-tracked and untracked, not ignored), as a
    user's clone would hold them: the template the add command is given."""
    import shutil

    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for rel in listed:
        if (root / rel).is_file() and not rel.startswith(("out/", ".venv")):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, target / rel)
    return target
