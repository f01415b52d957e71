"""Every option combination renders a complete project that the real validators accept."""

from __future__ import annotations

import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import AWS_CASES, CONFIG, CUSTOM, CUSTOM_CASES, FREE_TEXT, params
from dockerfile_parse import DockerfileParser

BIN = Path(sys.executable).parent
KUBERNETES_VERSIONS = ["1.31.0", "1.34.0", "1.37.0"]
GOLDEN = Path(__file__).resolve().parent / "golden_files.txt"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def golden_lists() -> dict[str, set[str]]:
    sections: dict[str, set[str]] = {}
    current = None
    for line in GOLDEN.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], set())
        elif line and not line.startswith("#"):
            current.add(line)
    return sections


def variant_answers(variant: str, xcom: bool) -> dict:
    cloud, *options = variant.split("-")
    return {"cloud": cloud, "xcom": xcom, "pod_operator": "native" if "native" in options else "kubernetes",
            "gpu_node_group": "gpu" in options}


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


@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "custom"])
@pytest.mark.parametrize("xcom", [True, False], ids=["xcom", "noxcom"])
@pytest.mark.parametrize("variant", sorted(set(golden_lists()) - {"common"}))
def test_files_match_the_golden_list(render, variant, xcom, custom):
    """Every file the variant should have, and nothing else (other clouds' and options' files pruned)."""
    golden = golden_lists()
    project = render(variant_answers(variant, xcom) | (CUSTOM if custom else {}))
    rel = {p.relative_to(project.path).as_posix() for p in project.files()}
    expected = golden["common"] | golden[variant]
    assert rel == expected, f"unexpected: {sorted(rel - expected)}; missing: {sorted(expected - rel)}"


def test_golden_lists_cover_every_variant():
    """A new option or cloud needs its golden list: the variants follow cookiecutter.json's choices."""
    variants = {"common"}
    for cloud, spec in CONFIG["_clouds"].items():
        for native in [False, True] if spec["native"] else [False]:
            for gpu in [False, True] if spec["gpu_node_group"] else [False]:
                variants.add(cloud + "-native" * native + "-gpu" * gpu)
    assert set(golden_lists()) == variants


# Values that also name template constants: remote_kpo is the example DAG's id and pool name and
# remote-kpo its tag, so the default slug is looked for through the names derived from it.
SLUG_DERIVED = ("remote-kpo-kpo-runner", "remote-kpo-remote-kpo", "remote-kpo-gpu-node", "managed-by: remote-kpo",
                "name: remote-kpo\n")


@pytest.mark.parametrize("answers", params(CUSTOM_CASES))
def test_no_default_answer_survives_in_a_custom_render(render, answers):
    """With every free-text answer changed, no default value may be left anywhere in the project."""
    project = render(answers)
    assert project.path.name == CUSTOM["project_slug"]
    defaults = {key: CONFIG[key] for key in FREE_TEXT if key != "project_slug"}
    survivors = []
    for path in project.files():
        text = path.read_text()
        survivors += [f"{path.relative_to(project.path)}: {key}={value!r}" for key, value in defaults.items()
                      if value in text]
        survivors += [f"{path.relative_to(project.path)}: project_slug ({form!r})" for form in SLUG_DERIVED
                      if form in text]
    assert not survivors, survivors


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
    assert all("*" not in rule["verbs"] for rule in role["rules"])
    assert all("watch" not in rule["verbs"] or rule["resources"] == ["events"] for rule in role["rules"]), \
        "watch on events only (the triggerer's event watch; k8s/role.yaml says why)"


@pytest.mark.parametrize("answers", AWS_CASES)
def test_eksctl_cluster_config_matches_schema(render, answers):
    import jsonschema

    schema_path = SCHEMAS / "eksctl-clusterconfig-v1alpha5.schema.json"  # source and license: schemas/README.md
    project = render(answers)
    config = yaml.safe_load((project.path / "aws/cluster.yaml").read_text())
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(config, schema | {"$ref": "#/definitions/ClusterConfig"})
    entry = config["accessConfig"]["accessEntries"][0]
    access_entry = json.loads((project.path / "aws/access-entry.json").read_text())
    assert entry["principalARN"] == access_entry["principalArn"]
    assert entry["kubernetesGroups"] == access_entry["kubernetesGroups"]


@pytest.mark.parametrize("answers", AWS_CASES)
def test_aws_trust_policy_names_only_the_workload_identity(render, answers):
    project = render(answers)
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


def test_image_test_fails_instead_of_skipping_where_ci_requires_the_build(render, tmp_path):
    """The workflow's image step sets REQUIRE_IMAGE_BUILD=1: a skipped build must not pass there."""
    workflow = yaml.safe_load((Path(__file__).resolve().parent.parent / ".github/workflows/ci.yml").read_text())
    (step,) = [s for s in workflow["jobs"]["test"]["steps"] if "tests/test_image.py" in s.get("run", "")]
    assert step["env"]["REQUIRE_IMAGE_BUILD"] == "1"
    project = render({"cloud": "generic", "xcom": True})
    command = [sys.executable, "-m", "pytest", "-m", "docker", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs",
               "tests/test_image.py"]
    if shutil.which("docker") and run("docker", "info").returncode == 0:
        pytest.skip("a Docker engine runs here: the image would really be built")
    relaxed = subprocess.run(command, cwd=project.path, capture_output=True, text=True, timeout=300)
    required = subprocess.run(command, cwd=project.path, capture_output=True, text=True, timeout=300,
                              env=os.environ | {"REQUIRE_IMAGE_BUILD": "1"})
    assert relaxed.returncode == 0 and "1 skipped" in relaxed.stdout, relaxed.stdout[-2000:]
    assert required.returncode == 1 and "1 failed" in required.stdout, required.stdout[-2000:]
    assert "REQUIRE_IMAGE_BUILD=1 makes this a failure" in required.stdout, required.stdout[-2000:]
