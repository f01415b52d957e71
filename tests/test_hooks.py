"""The hooks: every class of bad input is refused with one line naming its field, all bad answers at once, and
nothing is left on disk."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG, ROOT, check_keys

COOKIECUTTER = Path(sys.executable).parent / "cookiecutter"


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # valid Python before rendering: Jinja only in a string
    return module


PRE = load_hook("pre_gen_project")
POST = load_hook("post_gen_project")
GUID_A = "0f0e0d0c-0b0a-4909-8807-060504030201"

# field, bad value, cloud (for fields whose rule depends on it)
BAD = [
    ("project_name", "", "aws"),
    ("project_name", "x" * 60, "aws"),
    ("project_name", "1st project", "aws"),
    ("project_name", 'evil"; touch /tmp/x', "aws"),
    ("project_slug", "../escape", "aws"),
    ("project_slug", "Has-Caps", "aws"),
    ("namespace", "Airflow", "aws"),
    ("namespace", "kube-system", "aws"),
    ("namespace", "default", "aws"),
    ("namespace", "a" * 64, "aws"),
    ("namespace", "-lead", "aws"),
    ("kubernetes_conn_id", "k8s-conn", "aws"),
    ("kubernetes_conn_id", "{{ 7*7 }}", "aws"),
    ("cluster_name", "$(id)", "aws"),
    ("cluster_name", "Upper", "gcp"),
    ("cluster_name", "x" * 41, "gcp"),
    ("aws_account_id", "12345678901", "aws"),
    ("aws_account_id", "1234-5678-9012", "aws"),
    ("aws_region", "useast1", "aws"),
    ("aws_astro_workload_identity_arn", "arn:aws:iam::123:role/x", "aws"),
    ("aws_astro_workload_identity_arn", "arn:aws:iam::111122223333:user/bob", "aws"),
    ("gcp_project_id", "Proj", "gcp"),
    ("gcp_location", "us central1", "gcp"),
    ("gcp_service_account_email", "someone@gmail.com", "gcp"),
    ("azure_tenant_id", "not-a-guid", "azure"),
    ("azure_identity_client_id", GUID_A.upper(), "azure"),
    ("azure_resource_group", "rg.", "azure"),
]


def answers(**overrides) -> dict:
    base = {k: v[0] if isinstance(v, list) else v for k, v in CONFIG.items() if not k.startswith("_")}
    base["_clouds"] = CONFIG["_clouds"]
    base["project_slug"] = "remote_kpo"
    return base | overrides


@pytest.mark.parametrize("field,value,cloud", BAD, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_validator_names_the_field(field, value, cloud):
    errors = PRE.check_fields(answers(cloud=cloud, **{field: value}))
    assert list(errors) == [field], errors
    assert errors[field].startswith(f"ERROR: {field}: ") and "e.g. " in errors[field]
    assert "\n" not in errors[field]


def test_every_bad_answer_is_named_at_once_in_prompt_order():
    """One line per bad answer (first bad value of each aws-checked field in BAD), none left out."""
    bad = {}
    for field, value, cloud in BAD:
        if cloud == "aws":
            bad.setdefault(field, value)
    errors = PRE.check(answers(**bad))
    assert list(errors) == [k for k in CONFIG if k in bad], errors
    assert all(line.startswith(f"ERROR: {field}: ") and "\n" not in line for field, line in errors.items())


def test_rules_follow_the_prompts():
    """Refusals come in prompt order whatever order the answers arrive in (the hook gets them sorted)."""
    order = [*PRE.RULES]
    order.insert(order.index("cloud") + 1, "cluster_name")
    assert order == [k for k in CONFIG if not k.startswith("_")]


def test_main_prints_one_line_per_bad_answer(capsys):
    assert PRE.main(answers(namespace="default", aws_account_id="12", xcom="maybe")) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["namespace", "xcom", "aws_account_id"], lines


@pytest.mark.parametrize("overrides,named,why", [
    ({"aws_region": "useast1"}, ["aws_region"], "is not allowed"),
    ({"aws_region": "cn-north-1", "aws_astro_workload_identity_arn": "arn:aws:iam::1:role/x"},
     ["aws_astro_workload_identity_arn"], "is not allowed"),
    ({"cloud": "azure", "azure_tenant_id": "nope", "azure_identity_object_id": CONFIG["azure_identity_client_id"]},
     ["azure_tenant_id", "azure_identity_object_id"], "must differ"),
    ({"cloud": "azure", "azure_identity_object_id": "NOPE", "azure_tenant_id": CONFIG["azure_identity_client_id"]},
     ["azure_identity_object_id"], "is not allowed"),
], ids=["bad-region-no-partition-check", "bad-arn-no-partition-check", "duplicate-ids-among-valid-ones",
        "own-rule-first"])
def test_combinations_look_only_at_answers_valid_on_their_own(overrides, named, why):
    errors = PRE.check(answers(**overrides))
    assert list(errors) == named, errors
    assert why in errors[named[-1]]


def test_defaults_pass_for_every_cloud():
    for cloud in CONFIG["cloud"]:
        assert PRE.main(answers(cloud=cloud)) == 0


@pytest.mark.parametrize("overrides,field", [
    ({"aws_region": "us-gov-west-1"}, "aws_astro_workload_identity_arn"),
    ({"cloud": "azure", "azure_identity_object_id": CONFIG["azure_identity_client_id"]}, "azure_identity_object_id"),
], ids=["aws-partition-mismatch", "azure-client-equals-object-id"])
def test_combinations_are_checked(overrides, field):
    errors = PRE.check(answers(**overrides))
    assert list(errors) == [field] and errors[field].startswith(f"ERROR: {field}: ")


def retry_command(output: str) -> str:
    """The retry command a refusal prints: the lines after "and run:", joined where they end in a backslash."""
    lines = output.replace("\r", "").split("and run:\n", 1)[1].splitlines()
    end = next(i for i, line in enumerate(lines) if not line.endswith(" \\"))
    return "\n".join(lines[: end + 1])


def retry_words(output: str) -> list[str]:
    """The retry command as the shell splits it (a backslash-newline only continues the line)."""
    return shlex.split(retry_command(output).replace(" \\\n", " "))


def bake_cli(tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    args = [f"{k}={v}" for k, v in check_keys(extra).items()]
    return subprocess.run([str(COOKIECUTTER), "--no-input", "--output-dir", str(tmp_path / "out"), str(ROOT), *args],
                          capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.parametrize("field,value,cloud", BAD[::3], ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD[::3])])
def test_real_cookiecutter_refuses_and_leaves_nothing(tmp_path, field, value, cloud):
    done = bake_cli(tmp_path, cloud=cloud, **{field: value})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {field}: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert f"{field}=<FIX>" in retry_words(done.stdout), done.stdout
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not leftovers and not any((tmp_path / "out").glob("*")), leftovers
    assert not (tmp_path.parent / "escape").exists()


def test_prune_map_keeps_shared_paths():
    clouds = CONFIG["_clouds"]
    assert "docker-compose.override.yml" not in POST.paths_to_prune(clouds, "aws")
    assert "docker-compose.override.yml" in POST.paths_to_prune(clouds, "azure")
    assert "aws" in POST.paths_to_prune(clouds, "gcp")
    for cloud in clouds:
        assert not POST.paths_to_prune(clouds, cloud) & set(clouds[cloud]["paths"])


def test_template_code_passes_ruff():
    paths = [ROOT / p for p in ("hooks", "tests", "benchmarks", "dev.py", "local_extensions.py")]
    done = subprocess.run([str(COOKIECUTTER.parent / "ruff"), "check", "--no-cache", *map(str, paths)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("cloud,option,value", [("azure", "pod_operator", "native"), ("generic", "pod_operator", "native"),
                                                ("azure", "gpu_node_group", True), ("generic", "gpu_node_group", True)])
def test_options_a_cloud_lacks_are_refused_in_one_line(cloud, option, value):
    errors = PRE.check(answers(cloud=cloud, **{option: value}))
    assert list(errors) == [option], errors
    assert errors[option].startswith(f"ERROR: {option}: ") and f"allowed for {cloud}: " in errors[option]
    assert "\n" not in errors[option]
