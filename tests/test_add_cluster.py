"""Adding clusters to a rendered project (the cluster/ template) and removing them (clusters/manage.py).

Real cookiecutter CLI, real validators. Each scenario is a primary project and a list of steps (add,
add again, remove ...) run once per session; the project is copied after every step, so each test
reads the states it needs. What the steps must keep: no file of the primary or of another cluster
changes, an add run twice changes nothing, removing the last cluster restores the project.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG, CUSTOM, ROOT, check_keys

BIN = Path(sys.executable).parent
CLUSTER_CONFIG = json.loads((ROOT / "cluster" / "cookiecutter.json").read_text())
STATIC_DAGS = {f"dags/{p.name}" for p in (ROOT / "cluster" / "files" / "dags").glob("*.py")}
SHARED = {"Dockerfile", "requirements.txt", "docker-compose.override.yml", ".env"}
CONNECTIONS = {"airflow_settings.yaml", "connection.env"}  # each cluster's write_connection.py owns a part
GPU_DAG = re.compile(r"dags/remote_kpo_gpu_(\w+)\.py")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": "/dev/null"}

GUIDS = ["4d3c2b1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a", "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
         "8c7d6e5f-4a3b-4c2d-8e1f-0a9b8c7d6e5f", "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"]
# Every primary cloud once, every cloud added at least once, each with non-default answers.
SCENARIOS = {
    "aws": ({"cloud": "aws", "xcom": True, **CUSTOM}, [
        ("add", {"cluster_id": "gke-gpu", "cloud": "gcp", "gpu_node_group": True, "xcom": False,
                 "cluster_name": "gke-train", "namespace": "ml-gpu", "kubernetes_conn_id": "gke_train",
                 "gcp_project_id": "ml-gpu-prod", "gcp_location": "europe-west4",
                 "gcp_service_account_email": "astro-gpu@ml-gpu-prod.iam.gserviceaccount.com"}),
        ("add", {"cluster_id": "aks-cpu", "cloud": "azure", "namespace": "batch", "azure_resource_group": "rg-aks-cpu",
                 "azure_subscription_id": GUIDS[0], "azure_tenant_id": GUIDS[1], "azure_identity_client_id": GUIDS[2],
                 "azure_identity_object_id": GUIDS[3]}),
        ("add", {"cluster_id": "gke-two", "cloud": "gcp"}),
        ("again", {"cluster_id": "gke-gpu"}),
        ("remove", "aks-cpu"), ("remove", "gke-gpu"), ("remove", "gke-two")]),
    "generic": ({"cloud": "generic", "xcom": False, **CUSTOM}, [
        ("add", {"cluster_id": "eks-cpu", "cloud": "aws", "pod_operator": "native", "xcom": False,
                 "cluster_name": "cpu-eks", "aws_account_id": "345678901234", "aws_region": "eu-central-1",
                 "aws_astro_workload_identity_arn": "arn:aws:iam::444455556666:role/astro-ml-prod"}),
        ("add", {"cluster_id": "eks-gpu", "cloud": "aws", "gpu_node_group": True, "aws_region": "us-west-2"}),
        ("again", {"cluster_id": "eks-cpu"}),
        ("remove", "eks-cpu"), ("remove", "eks-gpu")]),
    "gcp": ({"cloud": "gcp", "xcom": True}, [
        ("add", {"cluster_id": "gke-two", "cloud": "gcp", "gcp_location": "us-east1-b"}),
        ("add", {"cluster_id": "onprem", "cloud": "generic", "cluster_name": "onprem-1", "namespace": "onprem-jobs",
                 "kubernetes_conn_id": "onprem"}),
        ("remove", "gke-two"), ("remove", "onprem")]),
    # A long slug: an EKS runner role name of an added cluster can pass IAM's 64 characters.
    "azure": ({"cloud": "azure", "xcom": True, "project_name": "Nightly Batch Training Platform Jobs"}, [
        ("add", {"cluster_id": "eks-batch", "cloud": "aws"}),
        ("remove", "eks-batch")]),
}


def run(*cmd, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})


def words(answers: dict) -> list[str]:
    return [f"{k}={('yes' if v else 'no') if isinstance(v, bool) else v}" for k, v in answers.items()]


def add_cluster(project: Path, answers: dict, template: Path = ROOT) -> subprocess.CompletedProcess:
    unknown = set(answers) - set(CLUSTER_CONFIG)
    assert not unknown, f"not in cluster/cookiecutter.json: {unknown}"
    return run(BIN / "cookiecutter", "--no-input", template, "--directory", "cluster", *words(answers), cwd=project)


def manage(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run(sys.executable, project / "clusters" / "manage.py", *args, cwd=project)


def files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and ".git" not in p.relative_to(path).parts}


def tree_hash(found: dict[str, bytes]) -> str:
    return hashlib.sha256(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in found.items()}).encode()).hexdigest()


def owner(rel: str) -> str | None:
    """Whose file: "primary", a cluster package, or None for shared and combined files."""
    if rel in SHARED or rel in CONNECTIONS or rel in STATIC_DAGS or (rel.startswith("clusters/") and rel.count("/") == 1):
        return None
    if rel.startswith("clusters/"):
        return rel.split("/")[1]
    gpu = GPU_DAG.fullmatch(rel)
    return gpu.group(1) if gpu else "primary"


def per_owner(found: dict[str, bytes]) -> dict[str, str]:
    groups: dict[str, dict[str, bytes]] = {}
    for rel, data in found.items():
        if owner(rel):
            groups.setdefault(owner(rel), {})[rel] = data
    return {name: tree_hash(group) for name, group in groups.items()}


def settings(path: Path) -> dict:
    """airflow_settings.yaml and connection.env by name: {"connections": {id: entry}, "pools": {...}, "env": {...}}."""
    data = yaml.safe_load((path / "airflow_settings.yaml").read_text())["airflow"]
    env = path / "connection.env"
    lines = env.read_text().splitlines() if env.exists() else []
    return {"connections": {c["conn_id"]: c for c in data["connections"] or []},
            "pools": {p["pool_name"]: p for p in data["pools"] or []},
            "env": dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))}


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def render_primary(out: Path, answers: dict) -> Path:
    done = run(BIN / "cookiecutter", "--no-input", ROOT, "--output-dir", out, *words(check_keys(dict(answers))))
    assert done.returncode == 0, done.stderr
    (project,) = out.iterdir()
    return project


def build(target: Path, primary: dict, steps: list) -> None:
    """The primary, then each step; state/<n> is the project after step n (0: as rendered)."""
    project = render_primary(target / "work", primary)
    shutil.copytree(project, target / "state" / "0")
    added: dict[str, dict] = {}
    for n, (kind, arg) in enumerate(steps, 1):
        if kind == "remove":
            done = manage(project, "remove", arg)
        else:
            added[arg["cluster_id"]] = answers = added.get(arg["cluster_id"], arg)
            done = add_cluster(project, answers)
        assert done.returncode == 0, f"step {n} {kind} {arg}: {done.stdout}\n{done.stderr}"
        (target / "state" / f"{n}.log").write_text(done.stdout + done.stderr)
        shutil.copytree(project, target / "state" / str(n))


@pytest.fixture(scope="session")
def scenario(tmp_path_factory, worker_id):
    """scenario(name) -> folder of its states, built once for all test workers."""
    shared = tmp_path_factory.getbasetemp()
    shared = (shared if worker_id == "master" else shared.parent) / "add_cluster"

    def _scenario(name: str) -> Path:
        target = shared / name
        with locked(shared / f"{name}.lock"):
            if not (shared / f"{name}.done").exists():
                shutil.rmtree(target, ignore_errors=True)
                build(target, *SCENARIOS[name])
                (shared / f"{name}.done").write_text("")
        return target / "state"

    return _scenario


def state(scenario, name: str, n: int) -> Path:
    return scenario(name) / str(n)


def log(scenario, name: str, n: int) -> str:
    return (scenario(name) / f"{n}.log").read_text()


# ---- adding and removing ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_step_changes_a_file_of_the_primary_or_of_another_cluster(scenario, name):
    steps = SCENARIOS[name][1]
    for n, (kind, arg) in enumerate(steps, 1):
        touched = (arg if kind == "remove" else arg["cluster_id"]).replace("-", "_")
        before, after = per_owner(files(state(scenario, name, n - 1))), per_owner(files(state(scenario, name, n)))
        for who in set(before) | set(after):
            if who != touched:
                assert before.get(who) == after.get(who), f"step {n} ({kind} {touched}) changed files of {who}"
        record = next(state(scenario, name, i) / "clusters" / touched / "cluster.json" for i in (n, n - 1)
                      if (state(scenario, name, i) / "clusters" / touched / "cluster.json").exists())
        answers = json.loads(record.read_text())["answers"]
        conn = answers["kubernetes_conn_id"]
        mine = {conn, f"{conn}_{answers['cloud']}", f"remote_kpo_{touched}"}
        mine |= {f"AIRFLOW_CONN_{k.upper()}" for k in mine}
        old, new = settings(state(scenario, name, n - 1)), settings(state(scenario, name, n))
        for part in ("connections", "pools", "env"):
            assert {k: v for k, v in old[part].items() if k not in mine} == \
                   {k: v for k, v in new[part].items() if k not in mine}, f"step {n}: {part} of others changed"
        if kind == "add":
            assert conn in new["connections"] and f"remote_kpo_{touched}" in new["pools"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_removing_the_last_cluster_restores_the_project(scenario, name):
    last = len(SCENARIOS[name][1])
    before, after = files(state(scenario, name, 0)), files(state(scenario, name, last))
    assert set(before) == set(after), f"added: {set(after) - set(before)}; missing: {set(before) - set(after)}"
    changed = [rel for rel in before if before[rel] != after[rel] and rel not in CONNECTIONS]
    assert changed == [], changed
    assert settings(state(scenario, name, 0)) == settings(state(scenario, name, last))
    assert "no added cluster left" in log(scenario, name, last)


@pytest.mark.parametrize("name", ["aws", "generic"])
def test_adding_a_cluster_twice_changes_nothing(scenario, name):
    n = next(i for i, (kind, _) in enumerate(SCENARIOS[name][1], 1) if kind == "again")
    assert tree_hash(files(state(scenario, name, n - 1))) == tree_hash(files(state(scenario, name, n)))
    cluster_id = SCENARIOS[name][1][n - 1][1]["cluster_id"]
    assert f"cluster {cluster_id} is already in this project" in log(scenario, name, n)
    assert "nothing to change" in log(scenario, name, n)


def test_an_added_cluster_has_its_part_and_answers(scenario):
    project = state(scenario, "aws", 3)
    part = project / "clusters" / "gke_gpu"
    record = json.loads((part / "cluster.json").read_text())
    assert record["answers"]["cluster_name"] == "gke-train" and record["answers"]["gpu_node_group"] is True
    assert not any(k.startswith(("aws_", "azure_")) for k in record["answers"]), "other clouds' answers are left out"
    for rel, digest in record["files"].items():
        assert hashlib.sha256((project / rel).read_bytes()).hexdigest() == digest, rel
    assert {"include/remote_cluster.py", "k8s/role.yaml", "gcp/gpu-node-pools-role.yaml", "scripts/setup_remote.sh",
            "scripts/setup/gcp.sh", "scripts/write_connection.py"} <= {p.relative_to(part).as_posix()
                                                                       for p in part.rglob("*") if p.is_file()}
    assert not (part / "aws").exists() and not (part / "scripts" / "setup" / "aws.sh").exists()
    assert os.access(part / "scripts" / "setup_remote.sh", os.X_OK)
    dag = (project / "dags" / "remote_kpo_gpu_gke_gpu.py").read_text()
    assert "from clusters.gke_gpu.include" in dag and '"remote_kpo_gpu_gke_gpu"' in dag
    settings_ = (part / "include" / "remote_cluster.py").read_text()
    for value in ('"gke-train"', '"ml-gpu"', '"gke_train"', '"ml-gpu-prod"', '"europe-west4"', "XCOM_ENABLED = False"):
        assert value in settings_, value
    eks = (state(scenario, "generic", 2) / "clusters" / "eks_gpu" / "include" / "remote_cluster.py").read_text()
    for value in ("ml-batch-eks-gpu-kpo-runner", "ml-batch-eks-gpu-remote-kpo", "airflow-kpo-runners-eks-gpu",
                  "ml-batch-eks-gpu-gpu-node", '"us-west-2"'):
        assert value in eks, value
    connections = settings(project)
    assert {"ml_cluster", "gke_train", "gke_train_gcp", "remote_kubernetes_aks_cpu", "remote_kubernetes_gke_two"} == \
           set(connections["connections"])
    assert {"remote_kpo", "remote_kpo_gke_gpu", "remote_kpo_aks_cpu", "remote_kpo_gke_two"} == set(connections["pools"])
    listed = manage(project, "list")
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == \
           ["ml-prod-eu", "aks-cpu", "gke-gpu", "gke-two"]


# ---- the shared files ----------------------------------------------------------------------------------

def downloads(dockerfile: Path) -> list[str]:
    return re.findall(r"^ADD --checksum=sha256:[0-9a-f]{64} \\\n\s+(\S+) ", dockerfile.read_text(), re.M)


def test_the_dockerfile_gains_each_plugin_once(scenario):
    tools = {name: CONFIG["_clouds"][name]["toolchain"] for name in ("gcp", "azure")}
    urls = {name: set(tool["url"].values()) for name, tool in tools.items()}
    assert downloads(state(scenario, "aws", 0) / "Dockerfile") == []
    one_gcp = downloads(state(scenario, "aws", 1) / "Dockerfile")
    assert sorted(one_gcp) == sorted(urls["gcp"])
    both = downloads(state(scenario, "aws", 3) / "Dockerfile")  # gcp, azure, gcp again: each tool once
    assert sorted(both) == sorted(urls["gcp"] | urls["azure"])
    text = (state(scenario, "aws", 3) / "Dockerfile").read_text()
    assert text.startswith("# syntax=docker/dockerfile:1.7\n")
    assert text.index("ARG TARGETARCH=amd64") < text.index("\nFROM ") and text.count("ARG TARGETARCH=amd64") == 1
    for tool in tools.values():
        assert text.count(f"COPY --from={tool['name']} /usr/local/bin/{tool['name']} ") == 1
        assert f" AS {tool['name']}-amd64\n" in text and f" AS {tool['name']}-arm64\n" in text
        for arch in ("amd64", "arm64"):
            assert f"--checksum=sha256:{tool['sha256'][arch]} \\\n    {tool['url'][arch]} " in text
    # A gcp primary has the plugin: a gcp cluster adds none; a native aws cluster needs none.
    assert (state(scenario, "gcp", 1) / "Dockerfile").read_bytes() == (state(scenario, "gcp", 0) / "Dockerfile").read_bytes()
    assert (state(scenario, "generic", 1) / "Dockerfile").read_bytes() == \
           (state(scenario, "generic", 0) / "Dockerfile").read_bytes()


def requirement_lines(path: Path) -> list[str]:
    return [line for line in (path / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]


def test_requirements_gain_each_provider_once(scenario):
    providers = CONFIG["_providers"]
    assert requirement_lines(state(scenario, "aws", 3)) == requirement_lines(state(scenario, "aws", 0)) + [providers["google"]]
    generic = requirement_lines(state(scenario, "generic", 2))
    assert generic == [providers["cncf_kubernetes"], providers["amazon"].replace("==", "[aiobotocore]==")]
    azure = requirement_lines(state(scenario, "azure", 0))
    assert requirement_lines(state(scenario, "azure", 1)) == azure + [providers["amazon"]]
    assert requirement_lines(state(scenario, "gcp", 2)) == requirement_lines(state(scenario, "gcp", 0))


def stub_wheel(folder: Path, name: str, version: str) -> None:
    dist = re.sub(r"[-_.]+", "_", name)
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nProvides-Extra: aiobotocore\n"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{info}/METADATA", meta)
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def test_pip_accepts_the_merged_requirements(scenario, tmp_path):
    """Same provider, other extras (aws primary + aws GPU cluster): two lines of one pin, which pip merges."""
    project = state(scenario, "aws", 0).parent / "extra"
    with locked(project.parent / "extra.lock"):
        if not project.exists():
            shutil.copytree(state(scenario, "aws", 0), project)
            done = add_cluster(project, {"cluster_id": "eks-gpu", "cloud": "aws", "gpu_node_group": True})
            assert done.returncode == 0, done.stderr
    lines = requirement_lines(project)
    assert lines[-1] == CONFIG["_providers"]["amazon"].replace("==", "[aiobotocore]==")
    for line in lines:
        name, version = re.fullmatch(r"([\w-]+)(?:\[[\w,]+\])?==([\d.]+)", line).groups()
        stub_wheel(tmp_path, name, version)
    done = run(sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", "--find-links", tmp_path,
               "--target", tmp_path / "t", "-r", project / "requirements.txt", env={"PIP_CONFIG_FILE": os.devnull})
    assert done.returncode == 0, done.stdout + done.stderr


def test_local_credentials_of_added_clouds(scenario):
    # aws primary + gcp: the ADC mount joins ~/.aws, the ADC path goes to .env.
    compose = yaml.safe_load((state(scenario, "aws", 1) / "docker-compose.override.yml").read_text())
    credentials = compose["x-cloud-credentials"]
    assert "${HOME}/.config/gcloud:/opt/remote-kpo/gcloud:ro" in credentials["volumes"]
    assert "${HOME}/.aws:/usr/local/airflow/.aws:ro" in credentials["volumes"]
    assert compose["services"]["scheduler"] == compose["services"]["triggerer"] == credentials
    env = (state(scenario, "aws", 1) / ".env").read_text()
    assert env.count("\nGOOGLE_APPLICATION_CREDENTIALS=/opt/remote-kpo/gcloud/application_default_credentials.json\n") == 1
    # generic primary (no compose file) + aws: a compose file with ~/.aws and the AWS_* paths.
    assert not (state(scenario, "generic", 0) / "docker-compose.override.yml").exists()
    compose = yaml.safe_load((state(scenario, "generic", 1) / "docker-compose.override.yml").read_text())
    aws = yaml.safe_load((state(scenario, "aws", 0) / "docker-compose.override.yml").read_text())["x-cloud-credentials"]
    assert compose["services"]["scheduler"] == aws
    # gcp primary + gcp: already there, nothing added.
    for name in (".env", "docker-compose.override.yml"):
        assert (state(scenario, "gcp", 1) / name).read_bytes() == (state(scenario, "gcp", 0) / name).read_bytes()


def test_a_block_edited_by_hand_is_not_overwritten(scenario, tmp_path):
    project = shutil.copytree(state(scenario, "aws", 1), tmp_path / "p")
    requirements = project / "requirements.txt"
    edited = requirements.read_text().replace("apache-airflow-providers-google==22.8.0", "apache-airflow-providers-google")
    requirements.write_text(edited)
    (project / "Dockerfile").write_text((project / "Dockerfile").read_text() + "RUN echo mine\n")  # outside the blocks
    done = add_cluster(project, {"cluster_id": "aks-cpu", "cloud": "azure"})
    assert done.returncode == 0, done.stderr
    assert requirements.read_text() == edited
    notes = [line for line in done.stderr.splitlines() if line.startswith("requirements.txt:")]
    assert len(notes) == 1 and "edited by hand" in notes[0] and "apache-airflow-providers-google==22.8.0" in notes[0]
    dockerfile = (project / "Dockerfile").read_text()
    assert dockerfile.endswith("RUN echo mine\n") and "COPY --from=kubelogin" in dockerfile


# ---- the validators, on a project with three added clusters (gcp, azure, gcp) ---------------------------

def test_hadolint_and_the_dockerfile_stages(scenario):
    for name, n in (("aws", 3), ("generic", 2), ("azure", 1)):
        done = run(BIN / "hadolint", "--failure-threshold", "info", state(scenario, name, n) / "Dockerfile")
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def checkov() -> str:
    sys.path.insert(0, str(ROOT))
    import dev

    dev.ensure_env(ROOT / ".venv-checkov", ROOT / "requirements" / "checkov.lock")
    return dev.bin_of(ROOT / ".venv-checkov", "checkov")


def test_checkov_on_the_multi_toolchain_project(scenario, checkov):
    done = run(checkov, "--skip-download", "--compact", "--output", "json", "--framework", "dockerfile", "kubernetes",
               "--directory", state(scenario, "aws", 3))
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert [c["check_id"] for r in reports for c in r["results"]["failed_checks"]] == []
    for report in reports:
        for skipped in report["results"]["skipped_checks"]:
            assert len((skipped.get("check_result") or {}).get("suppress_comment", "").strip()) > 20, skipped["check_id"]
    files_seen = {c["file_path"] for r in reports for c in r["results"]["passed_checks"]}
    assert any("/clusters/gke_gpu/k8s/" in f for f in files_seen) and "/Dockerfile" in files_seen


def test_manifests_of_every_cluster_pass_kubernetes_validate_strict(scenario):
    manifests = sorted(state(scenario, "aws", 3).glob("clusters/*/k8s/*.yaml"))
    manifests += sorted(state(scenario, "gcp", 2).glob("clusters/*/k8s/*.yaml"))
    assert len({m.parent for m in manifests}) == 5
    done = run(BIN / "kubernetes-validate", "--strict", "--kubernetes-version", "1.34.0", *manifests)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_on_the_copied_scripts(scenario):
    scripts = [p for name, n in (("aws", 3), ("generic", 2), ("gcp", 2))
               for p in state(scenario, name, n).glob("clusters/*/scripts/**/*.sh")]
    assert len(scripts) == 14  # setup_remote.sh + setup/<cloud>.sh of each of the 7 clusters
    done = run(BIN / "shellcheck", "--severity", "style", *scripts)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("name,n", [("aws", 3), ("generic", 2), ("gcp", 2), ("azure", 1)])
def test_multi_cluster_project_passes_ruff_with_airflow_rules(scenario, name, n):
    done = run(BIN / "ruff", "check", "--no-cache", "--isolated", "--target-version", "py312", "--line-length", "130",
               "--select", "E,F,W,B,UP,AIR", "--preview", state(scenario, name, n))
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_code_of_cluster_passes_ruff():
    done = run(BIN / "ruff", "check", "--no-cache", ROOT / "cluster", cwd=ROOT)
    assert done.returncode == 0, done.stdout


# ---- refusals --------------------------------------------------------------------------------------------

# answers, the fields refused (one ERROR line each, in prompt order). The project: azure primary
# "gpu-cluster" (slug nightly_batch_training_platform_jobs, 36 characters) with eks-batch added.
REFUSED = [
    pytest.param({"cluster_id": "Bad_Id"}, ["cluster_id"], id="id-pattern"),
    pytest.param({"cluster_id": "-lead"}, ["cluster_id"], id="id-leading-dash"),
    pytest.param({"cluster_id": "a" * 33}, ["cluster_id"], id="id-too-long"),
    pytest.param({"cluster_id": "x2", "cloud": "gcp", "cluster_name": "Upper", "namespace": "kube-system",
                  "gcp_service_account_email": "me@gmail.com"},
                 ["cluster_name", "namespace", "gcp_service_account_email"], id="main-rules"),
    pytest.param({"cluster_id": "x3", "cloud": "azure", "pod_operator": "native", "azure_tenant_id": "nope"},
                 ["pod_operator", "azure_tenant_id"], id="combination"),
    pytest.param({"cluster_id": "x4", "cloud": "generic", "gpu_node_group": True, "kubernetes_conn_id": "k8s-conn"},
                 ["kubernetes_conn_id", "gpu_node_group"], id="gpu-generic"),
    pytest.param({"cluster_id": "gpu-cluster"}, ["cluster_id"], id="primary-name"),
    pytest.param({"cluster_id": "eks-batch", "cloud": "aws", "namespace": "other"}, ["cluster_id"], id="same-id-other-answers"),
    pytest.param({"cluster_id": "x5", "kubernetes_conn_id": "remote_kubernetes"}, ["kubernetes_conn_id"], id="primary-conn"),
    pytest.param({"cluster_id": "x6", "kubernetes_conn_id": "remote_kubernetes_eks_batch"}, ["kubernetes_conn_id"],
                 id="added-conn"),
    pytest.param({"cluster_id": "x7", "cluster_name": "eks-batch", "cloud": "aws"}, ["namespace"], id="same-namespace"),
    pytest.param({"cluster_id": "eks-batch-training", "cloud": "aws"}, ["cluster_id"], id="iam-role-too-long"),
    pytest.param({"cluster_id": "Bad_Id", "namespace": "default", "aws_account_id": "1"},
                 ["cluster_id", "namespace", "aws_account_id"], id="all-at-once"),
]


def refused_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(lines) == len(done.stderr.strip().splitlines()), done.stderr  # nothing but ERROR lines
    return lines


@pytest.mark.parametrize("answers,fields", REFUSED)
def test_bad_answers_are_refused_one_line_each_and_nothing_is_written(scenario, answers, fields, tmp_path):
    project = shutil.copytree(state(scenario, "azure", 1), tmp_path / "project")  # an add let through stays here
    before = tree_hash(files(project))
    lines = refused_lines(add_cluster(project, answers))
    assert [line.split(":")[1].strip() for line in lines] == fields, lines
    assert tree_hash(files(project)) == before


def test_outside_a_project_is_refused(tmp_path):
    done = add_cluster(tmp_path, {"cluster_id": "gke-gpu"})
    lines = refused_lines(done)
    assert [line.split(":")[1].strip() for line in lines] == ["project"]
    assert list(tmp_path.iterdir()) == []
    # nothing in the answers to fix: the retry is the same command, from the project folder
    assert "<FIX>" not in done.stdout and "cd <your project folder>, then run:" in done.stdout, done.stdout
    # -o names the project instead of the current folder
    done = run(BIN / "cookiecutter", "--no-input", ROOT, "--directory", "cluster", "-o", tmp_path / "nowhere",
               "cluster_id=gke-gpu", cwd=tmp_path)
    assert [line.split(":")[1].strip() for line in refused_lines(done)] == ["project"]
    assert "<FIX>" not in done.stdout and "nowhere" not in done.stdout, done.stdout


def test_an_answer_is_data_never_a_template(scenario, tmp_path):
    marker = tmp_path / "pwned"
    project = shutil.copytree(state(scenario, "azure", 1), tmp_path / "project")
    before = tree_hash(files(project))
    attack = "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
    lines = refused_lines(add_cluster(project, {"cluster_id": "x8", "namespace": attack}))
    assert [line.split(":")[1].strip() for line in lines] == ["namespace"]
    assert not marker.exists() and tree_hash(files(project)) == before


# ---- manage.py ---------------------------------------------------------------------------------------------

def test_manage_refuses_in_one_line(scenario, tmp_path):
    project = shutil.copytree(state(scenario, "azure", 1), tmp_path / "project")
    before = tree_hash(files(project))
    for args, field in ((["remove", "nope"], "cluster_id"), (["remove", "gpu-cluster"], "cluster_id"),
                        (["update"], "--template")):
        done = manage(project, *args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith(f"ERROR: {field}: ")
    assert tree_hash(files(project)) == before


@pytest.fixture
def template_repo(tmp_path) -> tuple[Path, str]:
    """A git copy of this working tree's template (uncommitted changes included), and its commit."""
    repo = tmp_path / "template"
    repo.mkdir()
    for part in ("cookiecutter.json", "local_extensions.py", "hooks", "cluster", "{{cookiecutter.project_slug}}"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy2
        copy(ROOT / part, repo / part, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    git = {"cwd": repo, "env": GIT_ENV}
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-f", "-A"], ["git", "commit", "-qm", "v1"]):
        assert run(*cmd, **git).returncode == 0
    return repo, run("git", "rev-parse", "HEAD", **git).stdout.strip()


def test_update_brings_template_changes_and_keeps_edited_files(scenario, template_repo, tmp_path):
    repo, v1 = template_repo
    project = shutil.copytree(state(scenario, "azure", 1), tmp_path / "project")
    (project / ".cruft.json").write_text(json.dumps({"template": str(repo), "commit": v1, "context": {"cookiecutter": {
        "project_slug": "nightly_batch_training_platform_jobs", "project_name": "Nightly Batch Training Platform Jobs"}}}))
    part = project / "clusters" / "eks_batch"
    (part / "include" / "preflight.py").write_text((part / "include" / "preflight.py").read_text() + "# mine\n")
    for rel in ("include/kube_client.py", "include/preflight.py"):
        path = repo / "{{cookiecutter.project_slug}}" / rel
        path.write_text(path.read_text() + "# template v2\n")
    assert run("git", "commit", "-qam", "v2", cwd=repo, env=GIT_ENV).returncode == 0
    before = files(project)
    done = manage(project, "update")  # .cruft.json's commit: v1, nothing new
    assert done.returncode == 0, done.stdout + done.stderr
    assert files(project) == before and "nothing to change" in done.stderr
    done = manage(project, "update", "--template", str(repo))  # the working tree: v2
    assert done.returncode == 0, done.stdout + done.stderr
    after = files(project)
    assert after["clusters/eks_batch/include/kube_client.py"].endswith(b"# template v2\n")
    assert after["clusters/eks_batch/include/preflight.py"].endswith(b"# mine\n")
    kept = [line for line in done.stderr.splitlines() if line.startswith("kept ")]
    assert kept == [line for line in kept if "clusters/eks_batch/include/preflight.py" in line] and len(kept) == 1
    changed = {rel for rel in after if before.get(rel) != after[rel]}
    assert changed == {"clusters/eks_batch/include/kube_client.py", "clusters/eks_batch/cluster.json"}
    assert after["include/kube_client.py"] == before["include/kube_client.py"]  # the primary is cruft's


def test_the_cluster_questions_match_the_main_templates():
    """Same defaults and prompts as cookiecutter.json for every question both ask."""
    shared = [k for k in CLUSTER_CONFIG if k in CONFIG and not k.startswith("_")]
    assert len(shared) >= 15
    for key in shared:
        if key not in ("cluster_name", "kubernetes_conn_id"):
            assert CLUSTER_CONFIG[key] == CONFIG[key], key
    prompts, main_prompts = CLUSTER_CONFIG["__prompts__"], CONFIG["__prompts__"]
    for key in shared:
        if key.split("_")[0] in CONFIG["_clouds"]:
            assert prompts[key] == main_prompts[key], key
    assert list(CLUSTER_CONFIG)[0] == "cluster_id" and CLUSTER_CONFIG["cluster_name"] == "{{ cookiecutter.cluster_id }}"


# ---- review fixes: GPU node group per Kubernetes cluster, notes, remove guards --------------------------------

@pytest.mark.parametrize("name,n,gpu_primary,answers", [
    # generic project with eks-gpu (aws, GPU, default account, us-west-2): another entry for the same EKS cluster
    ("generic", 2, False, {"cluster_id": "eks-gpu2", "cloud": "aws", "cluster_name": "eks-gpu", "namespace": "other",
                           "gpu_node_group": True, "aws_region": "us-west-2"}),
    # aws primary ml-prod-eu (210987654321, eu-west-1) with its GPU DAG: an added entry for the same cluster
    ("aws", 0, True, {"cluster_id": "eks-two", "cloud": "aws", "cluster_name": "ml-prod-eu", "namespace": "other",
                      "gpu_node_group": True, "aws_account_id": "210987654321", "aws_region": "eu-west-1"}),
], ids=["added", "primary"])
def test_two_gpu_node_groups_on_one_kubernetes_cluster_are_refused(scenario, tmp_path, name, n, gpu_primary, answers):
    project = shutil.copytree(state(scenario, name, n), tmp_path / "project")
    if gpu_primary:
        settings_ = project / "include" / "remote_cluster.py"
        settings_.write_text(settings_.read_text().replace("GPU_NODE_GROUP = False", "GPU_NODE_GROUP = True", 1))
    before = tree_hash(files(project))
    lines = refused_lines(add_cluster(project, answers))
    assert [line.split(":")[1].strip() for line in lines] == ["gpu_node_group"], lines
    assert "airflow-gpu-remote-kpo" in lines[0]
    assert tree_hash(files(project)) == before


def test_add_next_steps_end_with_deploy_and_note_identity_federation_across_clouds(scenario):
    gcp_on_aws, aws_on_generic, gcp_on_gcp = log(scenario, "aws", 1), log(scenario, "generic", 1), log(scenario, "gcp", 1)
    for text in (gcp_on_aws, aws_on_generic, gcp_on_gcp):
        steps = [line for line in text.splitlines() if re.match(r"  \d+\. ", line)]
        assert "scripts/deploy.sh --deployment-id <id>" in steps[-1], steps
    assert "workload identity federation" in gcp_on_aws and "OIDC web identity" in aws_on_generic
    assert "workload identity" not in gcp_on_gcp  # same cloud as the deployment's: nothing to federate


def test_remove_says_what_stays_outside_the_project(scenario):
    for name, n, wanted in (("aws", 5, ["namespace batch", "role assignment", "AIRFLOW_CONN_REMOTE_KUBERNETES_AKS_CPU",
                                        "remote_kpo_aks_cpu"]),
                            ("aws", 6, ["namespace ml-gpu", "astro-gpu@ml-gpu-prod.iam.gserviceaccount.com",
                                        "AIRFLOW_CONN_GKE_TRAIN, AIRFLOW_CONN_GKE_TRAIN_GCP"]),
                            ("generic", 4, ["IAM role ml-batch-eks-cpu-kpo-runner", "access entry on cpu-eks"]),
                            ("gcp", 4, ["ServiceAccount", "stays valid until it expires", "remote_kpo_onprem"])):
        text = log(scenario, name, n)
        namespace = re.search(r"namespace (\S+) with", text).group(1)
        assert f"kubectl delete namespace {namespace}" in text
        for part in wanted:
            assert part in text, (name, n, part)


def test_remove_refuses_while_dags_use_the_cluster_or_its_files_were_edited(scenario, tmp_path):
    project = shutil.copytree(state(scenario, "aws", 3), tmp_path / "project")
    (project / "dags" / "mine.py").write_text('from clusters import cluster_args\nARGS = cluster_args("aks-cpu")\n')
    (project / "dags" / "other.py").write_text("from clusters import cluster_args\nARGS = cluster_args('gke-two')\n")
    preflight = project / "clusters" / "aks_cpu" / "include" / "preflight.py"
    preflight.write_text(preflight.read_text() + "# mine\n")
    before = tree_hash(files(project))
    done = manage(project, "remove", "aks-cpu")
    lines = refused_lines(done)
    assert len(lines) == 2 and "dags/mine.py" in lines[0] and "other.py" not in lines[0], lines
    assert "clusters/aks_cpu/include/preflight.py" in lines[1] and "--force" in lines[1], lines
    assert tree_hash(files(project)) == before
    done = manage(project, "remove", "aks-cpu", "--force")
    assert done.returncode == 0 and not (project / "clusters" / "aks_cpu").exists(), done.stderr
    # the last cluster: any DAG importing the registry stops loading with it
    project = shutil.copytree(state(scenario, "gcp", 3), tmp_path / "last")
    (project / "dags" / "mine.py").write_text("import clusters\n")
    lines = refused_lines(manage(project, "remove", "onprem"))
    assert len(lines) == 1 and "dags/mine.py" in lines[0] and "import clusters" in lines[0], lines


def test_removing_the_last_cluster_names_the_lines_of_an_edited_block(scenario, tmp_path):
    project = shutil.copytree(state(scenario, "aws", 1), tmp_path / "project")
    requirements = project / "requirements.txt"
    requirements.write_text(requirements.read_text().replace("apache-airflow-providers-google==",
                                                             "apache-airflow-providers-google>="))
    edited = requirements.read_text().splitlines(keepends=True)
    done = manage(project, "remove", "gke-gpu")
    assert done.returncode == 0, done.stderr
    (note,) = [line for line in done.stderr.splitlines() if line.startswith("requirements.txt:")]
    first, last = map(int, re.search(r"delete lines (\d+)-(\d+) ", note).groups())
    assert "make the block hold" not in note
    kept = "".join(edited[:first - 1] + edited[last:])
    assert kept == (state(scenario, "aws", 0) / "requirements.txt").read_text()
