"""The prompts as a user meets them, through the real cookiecutter CLI: interactively in a pseudo-terminal and
with --no-input. Interactively only the chosen cloud's questions are asked and an answer breaking its field's
rule is asked again on the spot; a refusal at the end names every bad answer at once and prints the
command that retries with the others kept; that command, fixed, renders. What cookiecutter refuses on its own,
before any code of this template runs, is checked as the README states it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import CONFIG, CUSTOM, ROOT
from cookiecutter.environment import StrictEnvironment
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cruft import template  # noqa: F401 - the git copy of this template that cruft needs
from test_hooks import PRE, retry_command, retry_words

BIN = Path(sys.executable).parent
VISIBLE = [k for k in CONFIG if not k.startswith("_")]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TERM="xterm-256color", COLUMNS="250")


def converse(args: list[str], replies: dict[str, list[str]], cwd: Path, timeout: float = 180,
             visible: list[str] = VISIBLE) -> tuple[int, str]:
    """Run a command in a pseudo-terminal and answer each prompt as it appears: the `[n/N]` counter names the
    field; its next reply from ``replies`` is typed, or Enter. Returns the exit code and the screen as text."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=ENV, start_new_session=True)
    os.close(slave)
    raw, answered, deadline = b"", 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.3)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other end closed: the command is done
                    break
                if not chunk:
                    break
                raw += chunk
                continue
            screen = ANSI.sub("", raw.decode(errors="replace"))
            asked = re.findall(r"^  \[(\d+)/\d+\] ", screen[answered:], re.M)
            if asked and screen.endswith(": "):
                field = visible[int(asked[-1]) - 1]
                queue = replies.get(field, [])
                os.write(master, ((queue.pop(0) if queue else "") + "\n").encode())
                answered = len(screen)
        else:
            pytest.fail(f"no end within {timeout}s:\n{ANSI.sub('', raw.decode(errors='replace'))}")
        return proc.wait(timeout=30), ANSI.sub("", raw.decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def shown(field: str) -> str:
    """The prompt text as Rich prints it: `\\[` is an escaped bracket."""
    prompt = CONFIG["__prompts__"][field]
    return (prompt["__prompt__"] if isinstance(prompt, dict) else prompt).replace("\\[", "[")


def fixed(command: str, fixes: dict[str, str]) -> str:
    """The printed retry command with each `field=<FIX>` word replaced, as a user would edit it."""
    for field, value in fixes.items():
        command = command.replace(shlex.quote(f"{field}=<FIX>"), shlex.quote(f"{field}={value}"))
    assert "<FIX>" not in command, command
    return command


def run_in_shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def files_text(project: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in project.rglob("*") if p.is_file())


def cloud_tag(field: str) -> str | None:
    """Which clouds a question is for, from the data: an `<cloud>_` prefix, or the clouds offering the option."""
    clouds = CONFIG["_clouds"]
    if field.split("_")[0] in clouds:
        return field.split("_")[0]
    if field in ("pod_operator", "gpu_node_group"):
        return "/".join(name for name, c in clouds.items() if c["native" if field == "pod_operator" else field])
    return None


def test_every_cloud_only_prompt_is_tagged_in_the_data():
    for field in VISIBLE:
        tag = cloud_tag(field)
        assert shown(field).startswith(f"[{tag}] ") == bool(tag), (field, shown(field))
    texts = [t for p in CONFIG["__prompts__"].values() for t in (p.values() if isinstance(p, dict) else [p])]
    assert not [t for t in texts if re.search(r"(?<!\\)\[", t)], "Rich reads an unescaped [ as a style tag"


def test_interactive_asks_only_the_chosen_clouds_questions_and_a_bad_answer_again(tmp_path):
    azure = {k: v for k, v in CUSTOM.items() if k.startswith("azure_")}
    replies = {
        "project_name": ["GPU Training!", "GPU Training"],  # '!' is refused on the spot; the slug default drops it
        "cloud": ["azure", "3"],                # a name is asked again; choices are numbers
        "namespace": ["Airflow", "team-ml"],    # refused on the spot: not a DNS label
        "xcom": ["maybe", "no"],                # asked again until yes or no
        "azure_tenant_id": ["not-a-guid", azure["azure_tenant_id"]],
    } | {k: [v] for k, v in azure.items() if k != "azure_tenant_id"}
    code, screen = converse([str(BIN / "cookiecutter"), "--output-dir", "out", str(ROOT)], replies, tmp_path)
    print(screen)
    assert code == 0, screen[-3000:]
    for n, field in enumerate(VISIBLE, 1):
        asked = f"[{n}/{len(VISIBLE)}] {shown(field)}" in screen  # Rich keeps every tag visible
        assert asked is (cloud_tag(field) is None or "azure" in cloud_tag(field).split("/")), field
    assert "(gpu_training): " in screen, "the slug default is valid although the name is not"
    assert "Please select one of the available options" in screen and "Please enter Y or N" in screen
    errors = [line for line in screen.splitlines() if line.startswith("ERROR: ")]
    assert [line.split(":")[1].strip() for line in errors] == ["project_name", "namespace", "azure_tenant_id"], errors
    for field in ("project_name", "namespace", "azure_tenant_id"):  # each asked again right after its refusal
        after = screen.split(f"ERROR: {field}: ", 1)[1].split("\n", 1)[1]
        assert after.lstrip().startswith(f"[{VISIBLE.index(field) + 1}/{len(VISIBLE)}] {shown(field)}"), field
    assert "Traceback" not in screen
    project = tmp_path / "out" / "gpu_training"
    text = files_text(project)
    assert all(value in text for value in [*azure.values(), "team-ml"])
    assert not (project / "dags" / "remote_kpo_gpu.py").exists()


def test_adding_a_cluster_interactively_asks_only_its_clouds_questions(tmp_path):
    """The add (`cookiecutter <template> --directory cluster` in a project) prompts the same way."""
    cluster_config = json.loads((ROOT / "cluster" / "cookiecutter.json").read_text())
    visible = [k for k in cluster_config if not k.startswith("_")]
    done = subprocess.run([str(BIN / "cookiecutter"), "--no-input", str(ROOT), "cloud=aws"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "remote_kpo"
    replies = {"cluster_id": ["gke-two"], "cloud": ["2"], "namespace": ["ML Jobs", "ml-jobs"],
               "gcp_project_id": ["my-gpu-project"]}
    code, screen = converse([str(BIN / "cookiecutter"), str(ROOT), "--directory", "cluster"], replies, project,
                            visible=visible)
    assert code == 0, screen[-3000:]
    asked = {field for n, field in enumerate(visible, 1) if re.search(rf"\[{n}/{len(visible)}\] ", screen)}
    assert not {f for f in asked if f.startswith(("aws_", "azure_"))}, asked
    assert {"cluster_id", "cloud", "namespace", "pod_operator", "gpu_node_group", "gcp_project_id"} <= asked, asked
    errors = [line.split(":")[1].strip() for line in screen.splitlines() if line.startswith("ERROR: ")]
    assert errors == ["namespace"], screen[-3000:]
    answers = json.loads((project / "clusters" / "gke_two" / "cluster.json").read_text())["answers"]
    assert answers["namespace"] == "ml-jobs" and answers["gcp_project_id"] == "my-gpu-project"


def test_interactive_answers_that_do_not_go_together_then_the_retry(tmp_path):
    """Rules joining several answers are checked once all are given: the refusal, then the retry command."""
    azure = {k: v for k, v in CUSTOM.items() if k.startswith("azure_")}
    same = azure["azure_identity_client_id"]
    replies = {"cloud": ["3"], "azure_identity_object_id": [same]} | {
        k: [v] for k, v in azure.items() if k != "azure_identity_object_id"}
    code, screen = converse([str(BIN / "cookiecutter"), "--output-dir", "out", str(ROOT)], replies, tmp_path)
    assert code == 1
    errors = [line for line in screen.splitlines() if line.startswith("ERROR: ")]
    assert [line.split(":")[1].strip() for line in errors] == ["azure_identity_object_id"], errors
    assert "Traceback" not in screen
    assert not (tmp_path / "out").exists(), "nothing is written"
    words = retry_words(screen)
    assert words[:5] == ["cookiecutter", "--no-input", "--output-dir", "out", str(ROOT)]
    assert dict(w.split("=", 1) for w in words[5:]) == {
        "project_name": "Remote KPO", "cloud": "azure", "cluster_name": "gpu-cluster", "namespace": "airflow-jobs",
        "kubernetes_conn_id": "remote_kubernetes", "xcom": "yes", "pod_operator": "kubernetes", "gpu_node_group": "no",
        **azure, "azure_identity_object_id": "<FIX>"}, "kept: every answer but the derived slug and other clouds' defaults"
    done = run_in_shell(fixed(retry_command(screen), {"azure_identity_object_id": azure["azure_identity_object_id"]}),
                        tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Created remote_kpo for Azure AKS" in done.stderr


def test_no_input_refusal_names_every_bad_answer_and_the_retry_renders(tmp_path):
    given_answers = {"project_name": "1st project", "cluster_name": CUSTOM["cluster_name"], "namespace": "kube-system",
                     "xcom": "no", "aws_account_id": "12345", "aws_region": CUSTOM["aws_region"],
                     "aws_astro_workload_identity_arn": CUSTOM["aws_astro_workload_identity_arn"],
                     "gcp_project_id": CUSTOM["gcp_project_id"]}  # typed for another cloud: kept all the same
    done = subprocess.run([str(BIN / "cookiecutter"), "--no-input", str(ROOT), *(f"{k}={v}" for k, v in given_answers.items())],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert [line.split(":")[1].strip() for line in done.stderr.splitlines()] == ["project_name", "namespace",
                                                                                 "aws_account_id"], done.stderr
    assert all(line.startswith("ERROR: ") and "e.g. " in line for line in done.stderr.splitlines())
    assert list(tmp_path.iterdir()) == []
    assert retry_words(done.stdout) == ["cookiecutter", "--no-input", str(ROOT), "project_name=<FIX>", "cloud=aws",
                                        f"cluster_name={CUSTOM['cluster_name']}", "namespace=<FIX>",
                                        "kubernetes_conn_id=remote_kubernetes", "xcom=no", "pod_operator=kubernetes",
                                        "gpu_node_group=no", "aws_account_id=<FIX>", f"aws_region={CUSTOM['aws_region']}",
                                        f"aws_astro_workload_identity_arn={CUSTOM['aws_astro_workload_identity_arn']}",
                                        f"gcp_project_id={CUSTOM['gcp_project_id']}"]

    again = run_in_shell(fixed(retry_command(done.stdout), {"project_name": CUSTOM["project_name"], "namespace":
                                                             CUSTOM["namespace"], "aws_account_id": CUSTOM["aws_account_id"]}),
                         tmp_path)
    assert again.returncode == 0, again.stderr
    text = files_text(tmp_path / "nightly_batch")
    for field in ("cluster_name", "namespace", "aws_account_id", "aws_region", "aws_astro_workload_identity_arn"):
        assert CUSTOM[field] in text, field


def test_the_retry_command_is_shell_quoted(tmp_path):
    """The command names the output folder the user gave; quoting keeps it one word that never runs; refused
    answers (shell payloads here) never appear in it."""
    marker, answer_marker = tmp_path / "MARKER", tmp_path / "ANSWER_MARKER"
    out = f"o u t/x'$(touch {marker})\"`touch {marker}`;"
    payloads = {"cluster_name": f"$(touch {answer_marker})", "namespace": f"'; touch {answer_marker}; '"}
    done = subprocess.run([str(BIN / "cookiecutter"), "--no-input", "-o", out, str(ROOT),
                           *(f"{k}={v}" for k, v in payloads.items())],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    words = retry_words(done.stdout)
    assert words[:5] == ["cookiecutter", "--no-input", "--output-dir", out, str(ROOT)]
    assert "cluster_name=<FIX>" in words and "namespace=<FIX>" in words
    assert not any(value in done.stdout for value in payloads.values())
    again = run_in_shell(fixed(retry_command(done.stdout), {"cluster_name": "gpu-cluster", "namespace": "jobs"}), tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / out / "remote_kpo").is_dir() and not marker.exists() and not answer_marker.exists()


@pytest.mark.parametrize("answer,last_line", [
    ("cloud=AWS", "ValueError: AWS provided for choice variable cloud, but the choices are ['aws', 'gcp', 'azure', 'generic']."),
    ("pod_operator=Native",
     "ValueError: Native provided for choice variable pod_operator, but the choices are ['kubernetes', 'native']."),
    ("xcom=maybe", "ValueError: maybe provided for variable xcom could not be converted to a boolean."),
    ("gpu_node_group=perhaps", "ValueError: perhaps provided for variable gpu_node_group could not be converted to a boolean."),
])
def test_cookiecutter_itself_refuses_unknown_choices_and_yes_no(tmp_path, answer, last_line):
    """As the README says: before any code of this template runs, a traceback whose last line is this."""
    done = subprocess.run([str(BIN / "cookiecutter"), "--no-input", str(ROOT), answer], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and lines[0] == "Traceback (most recent call last):" and lines[-1] == last_line, lines
    assert "ERROR: " not in done.stderr and done.stdout == "" and list(tmp_path.iterdir()) == []


def test_yes_no_answers_take_any_case(tmp_path):
    done = subprocess.run([str(BIN / "cookiecutter"), "--no-input", str(ROOT), "xcom=Off", "gpu_node_group=Y"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "remote_kpo" / "dags" / "remote_kpo_gpu.py").exists()


@settings(max_examples=300, deadline=None, database=None)
@given(name=st.from_regex(PRE.RULES["project_name"].pattern, fullmatch=True))
def test_every_valid_name_derives_a_valid_slug(name):
    slug = StrictEnvironment().from_string(CONFIG["project_slug"]).render(cookiecutter={"project_name": name})
    assert re.fullmatch(PRE.RULES["project_slug"].pattern, slug), (name, slug)


def test_invalid_names_still_derive_valid_slugs_where_they_can():
    derive = StrictEnvironment().from_string(CONFIG["project_slug"]).render
    assert derive(cookiecutter={"project_name": "GPU Training!"}) == "gpu_training"
    assert derive(cookiecutter={"project_name": "Ünïcode  Project--2 " + "x" * 50}) == "unicode_project_2_" + "x" * 22


def test_cruft_create_prints_its_own_retry(tmp_path, template):  # noqa: F811 - the fixture imported above
    out = tmp_path / "made"
    done = subprocess.run([str(BIN / "cruft"), "create", "--no-input", "--output-dir", str(out), str(template),
                           "--extra-context", json.dumps({"namespace": "kube-system", "cloud": "gcp"})],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.splitlines()[-1].startswith("ERROR: namespace: ")
    words = retry_words(done.stdout)
    assert words[:6] == ["cruft", "create", "--no-input", "--output-dir", str(out), str(template)]
    assert words[6] == "--extra-context" and json.loads(words[7])["namespace"] == "<FIX>" and len(words) == 8
    command = retry_command(done.stdout).replace('"namespace": "<FIX>"', '"namespace": "team-ml"')
    again = run_in_shell(command, tmp_path)
    assert again.returncode == 0, again.stderr
    recorded = json.loads((out / "remote_kpo" / ".cruft.json").read_text())["context"]["cookiecutter"]
    assert recorded["namespace"] == "team-ml" and recorded["cloud"] == "gcp"

