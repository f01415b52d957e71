"""Every option combination renders a complete project that the real validators accept."""

from __future__ import annotations

import json
import py_compile
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG, SHARED_SCHEMAS
from dockerfile_parse import DockerfileParser

BIN = Path(sys.executable).parent
KUBERNETES_VERSIONS = ["1.31.0", "1.34.0", "1.37.0"]
# What `astro dev init` writes for Runtime 3, plus our additions common to every cloud.
SKELETON = [
    ".astro/config.yaml", ".astro/test_dag_integrity_default.py", ".astro/dag_integrity_exceptions.txt",
    "dags/.airflowignore", "plugins/.gitkeep", "tests/dags/test_dag_example.py",
    "Dockerfile", "requirements.txt", "packages.txt", "airflow_settings.yaml", ".env",
    ".gitignore", ".dockerignore", "README.md",
    "dags/remote_kpo.py", "dags/check_remote_cluster.py", "include/remote_cluster.py",
    "include/preflight.py", "include/remote_pod.py", "scripts/write_connection.py", "tests/test_remote_setup.py",
    "k8s/namespace.yaml", "k8s/role.yaml", "k8s/rolebinding.yaml",
]


def run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)


def test_no_template_syntax_left(project):
    for path in project.files():
        text = path.read_text()
        assert "{{" not in text and "{%" not in text, path


def test_every_data_file_parses_and_python_compiles(project, tmp_path):
    for path in project.files():
        if path.suffix in {".yaml", ".yml"}:
            assert list(yaml.safe_load_all(path.read_text())), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".py":
            py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


def test_expected_files_present_and_other_clouds_pruned(project):
    rel = {p.relative_to(project.path).as_posix() for p in project.files()}
    assert set(SKELETON) <= rel
    clouds = CONFIG["_clouds"]
    answers = project.answers
    mine = set(clouds[answers["cloud"]]["paths"])
    native, gpu = answers.get("pod_operator") == "native", answers.get("gpu_node_group", False)
    if native:
        mine -= set(clouds[answers["cloud"]]["native"]["prune"])
    if not gpu:
        mine.discard("gcp")  # the folder holds only the GPU node-pool role
    for name, cloud in clouds.items():
        for path in cloud["paths"]:
            present = any(r == path or r.startswith(path + "/") for r in rel)
            assert present == (path in mine), (name, path)
    # Files only an option brings.
    assert ("dags/remote_kpo_gpu.py" in rel) == gpu and ("include/gpu_nodes.py" in rel) == gpu
    assert ("aws/runner-policy.json" in rel) == (answers["cloud"] == "aws" and (native or gpu))
    assert ("aws/gpu-node-trust-policy.json" in rel) == (answers["cloud"] == "aws" and gpu)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_kubernetes_validate_strict(project, version):
    manifests = sorted((project.path / "k8s").glob("*.yaml"))
    done = run(BIN / "kubernetes-validate", "--strict", "--kubernetes-version", version, *manifests)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_passes_hadolint(project):
    done = run(BIN / "hadolint", "--failure-threshold", "info", project.path / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_pins_runtime_and_verifies_every_download(project):
    parser = DockerfileParser(str(project.path / "Dockerfile"))
    final = parser.baseimage
    assert re.fullmatch(r"astrocrpublic\.azurecr\.io/runtime:3\.\d+-\d+", final), final
    downloads = [i for i in parser.structure if i["instruction"] in {"ADD", "RUN"} and "://" in i["value"]]
    for instruction in downloads:
        assert instruction["instruction"] == "ADD", f"download outside ADD --checksum: {instruction['content']}"
        assert re.match(r"--checksum=sha256:[0-9a-f]{64}\s", instruction["value"]), instruction["content"]
    toolchain = CONFIG["_clouds"][project.answers["cloud"]]["toolchain"]
    if project.answers.get("pod_operator") == "native":
        toolchain = None  # the native operator needs no plugin
    assert len(downloads) == (2 if toolchain else 0)  # one per architecture
    assert all(i["instruction"] != "USER" or i["value"] != "root" for i in parser.structure)


def test_python_passes_ruff_with_airflow_rules(project):
    done = run(BIN / "ruff", "check", "--no-cache", "--isolated", "--target-version", "py312",
               "--line-length", "130", "--select", "E,F,W,B,UP,AIR", "--preview", project.path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_names_agree_across_files(project):
    answers = project.answers
    settings = yaml.safe_load((project.path / "airflow_settings.yaml").read_text())["airflow"]
    connection, *cloud_connections = settings["connections"]
    assert connection["conn_id"] == answers["kubernetes_conn_id"]
    if answers.get("pod_operator") == "native":
        assert connection["conn_type"] in ("aws", "google_cloud_platform") and not cloud_connections
    else:
        assert connection["conn_extra"]["namespace"] == answers["namespace"]
        # The GPU DAG's node-group calls need the cloud's own connection next to the kubeconfig one.
        assert [c["conn_id"] for c in cloud_connections] == (
            [f"{answers['kubernetes_conn_id']}_{answers['cloud']}"] if answers.get("gpu_node_group") else [])
    for manifest in (project.path / "k8s").glob("*.yaml"):
        doc = yaml.safe_load(manifest.read_text())
        assert answers["namespace"] in (doc["metadata"].get("namespace"), doc["metadata"]["name"]), manifest
    constants = (project.path / "include/remote_cluster.py").read_text()
    assert f'CONNECTION_ID = "{answers["kubernetes_conn_id"]}"' in constants
    assert f'REMOTE_NAMESPACE = "{answers["namespace"]}"' in constants
    pools = [p["pool_name"] for p in settings["pools"]]
    assert re.search(r'REMOTE_POOL = "(\w+)"', constants).group(1) in pools


def test_role_has_exec_only_with_xcom(project):
    role = yaml.safe_load((project.path / "k8s/role.yaml").read_text())
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert ("pods/exec" in resources) == project.answers["xcom"]
    assert not {"secrets", "configmaps", "*"} & resources
    assert all("*" not in rule["verbs"] and "watch" not in rule["verbs"] for rule in role["rules"])


def test_eksctl_cluster_config_matches_schema(render):
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = SHARED_SCHEMAS / "eksctl-clusterconfig-v1alpha5.schema.json"
    if not schema_path.exists():
        pytest.skip(f"eksctl schema not found at {schema_path} (../shared is absent)")
    project = render({"cloud": "aws", "xcom": True})
    config = yaml.safe_load((project.path / "aws/cluster.yaml").read_text())
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(config, schema | {"$ref": "#/definitions/ClusterConfig"})
    entry = config["accessConfig"]["accessEntries"][0]
    access_entry = json.loads((project.path / "aws/access-entry.json").read_text())
    assert entry["principalARN"] == access_entry["principalArn"]
    assert entry["kubernetesGroups"] == access_entry["kubernetesGroups"]


def test_aws_trust_policy_names_only_the_workload_identity(render):
    project = render({"cloud": "aws", "xcom": True})
    policy = json.loads((project.path / "aws/trust-policy.json").read_text())
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"AWS": project.answers["aws_astro_workload_identity_arn"]}
    assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
    # The one condition AWS offers a cross-account trust that the token plugin can meet: ExternalId.
    external_id = statement["Condition"]["StringEquals"]["sts:ExternalId"]
    settings = yaml.safe_load((project.path / "airflow_settings.yaml").read_text())["airflow"]
    args = settings["connections"][0]["conn_extra"]["kube_config"]["users"][0]["user"]["exec"]["args"]
    assert args[args.index("--external-id") + 1] == external_id
    assert not list(project.path.glob("aws/*permission*")), "the runner role needs no permission policy"


def test_every_template_file_is_committed():
    """A nested .gitignore in the template once hid its own .env from git; CI then lacked it."""
    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--",
                             "{{cookiecutter.project_slug}}"], cwd=root, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    hidden = [p for p in listed.stdout.splitlines() if "__pycache__" not in p]
    assert not hidden, f"template files git ignores: {hidden}"


def test_every_prompt_has_help_and_a_readme_row():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    asked = [k for k in CONFIG if not k.startswith("_")]
    for key in asked:
        assert key in CONFIG["__prompts__"], f"{key} has no prompt help"
        assert re.search(rf"^\| `{key}` \|", readme, re.M), f"{key} has no row in the README prompt table"
