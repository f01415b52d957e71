"""Hostile answers: each one ends as a refusal (one line, naming its field; a retry command where the answer is
replaced by <FIX>) that leaves nothing on disk, or as a project where every file still parses and the answer
appears only as data. And an answer crafted to execute code never does (a marker file must not appear).
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG, ROOT, check_keys
from cookiecutter.main import cookiecutter
from dockerfile_parse import DockerfileParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hooks import PRE, retry_words

FREE_TEXT = [k for k, v in CONFIG.items() if not k.startswith("_") and isinstance(v, str)]
NASTY = ["'", '"', "\\", "\n", "\t", "\r", " ", "{{", "}}", "{%", "%}", "{#", "$(", ")", "`", "../", "/", ";", "|",
         "&", "<", ">", "#", ":", "*", "\u0430", "\uff41", "\u200b", "\u2028", "\u0000", "é", "İ", "-", "_", ".", "@"]
CASES_RUN: list[tuple[str, str]] = []  # (field, "refused" | "rendered")


def hostile_values():
    def splice(default: str):
        return st.tuples(st.integers(0, len(default)), st.lists(st.sampled_from(NASTY), min_size=1, max_size=4)).map(
            lambda t: default[: t[0]] + "".join(t[1]) + default[t[0]:])

    return st.one_of(
        st.sampled_from(["", " ", "\t", "x" * 64, "a" * 300, "1abc", "-abc", "abc-", "../../etc", "{{ 7*7 }}",
                         "$(touch x)", "ümlaut", "ÅBC", "0" * 12 + "0"]),
        st.lists(st.sampled_from(NASTY + list("abcXYZ019")), max_size=40).map("".join),
        st.sampled_from(FREE_TEXT).flatmap(lambda k: splice(CONFIG[k]) if "{{" not in CONFIG[k] else st.just(k)),
    )


def parses(project: Path) -> None:
    for path in project.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix in {".yaml", ".yml"}:
            list(yaml.safe_load_all(text))
        elif path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".py":
            ast.parse(text)
        elif path.name == "Dockerfile":
            assert DockerfileParser(fileobj=io.BytesIO(text.encode())).baseimage


DATA_TOKENS = {tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def keys(value, prefix=""):
    if isinstance(value, dict):
        return {f"{prefix}/{k}" for k in value} | set().union(*(keys(v, f"{prefix}/{k}") for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(keys(v, f"{prefix}[]") for v in value), set())
    return set()


def shape(project: Path) -> dict[str, object]:
    """Everything but the data: Python tokens other than strings/comments, YAML/JSON keys."""
    found: dict[str, object] = {}
    for path in project.rglob("*"):
        rel = path.relative_to(project).as_posix()
        if path.suffix == ".py":
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            found[rel] = [(t.type, t.string) for t in tokens if t.type not in DATA_TOKENS]
        elif path.suffix in {".yaml", ".yml"}:
            found[rel] = [keys(doc) for doc in yaml.safe_load_all(path.read_text())]
        elif path.suffix == ".json":
            found[rel] = keys(json.loads(path.read_text()))
    return found


BASELINES: dict[str, dict] = {}


def baseline(cloud: str, tmp: Path) -> dict:
    if cloud not in BASELINES:
        BASELINES[cloud] = shape(Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(tmp),
                                                   extra_context={"cloud": cloud, "project_slug": "baseline"})))
    return BASELINES[cloud]


@pytest.mark.filterwarnings("ignore")
def test_hostile_answers(tmp_path_factory):
    @settings(max_examples=520, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(field=st.sampled_from(FREE_TEXT), cloud=st.sampled_from(CONFIG["cloud"]), data=st.data())
    def case(field, cloud, data):
        rule = PRE.CLUSTER_NAME[cloud] if field == "cluster_name" else PRE.RULES[field]
        # Half hostile, half unusual-but-valid values from the field's own rule (edge lengths etc.).
        value = data.draw(st.one_of(hostile_values(), st.from_regex(rule.pattern, fullmatch=True)))
        out = tmp_path_factory.mktemp("hostile")
        stderr, stdout = io.StringIO(), io.StringIO()
        old = sys.stderr, sys.stdout
        sys.stderr, sys.stdout = stderr, stdout
        try:
            project = cookiecutter(str(ROOT), no_input=True, output_dir=str(out),
                                   extra_context=check_keys({"cloud": cloud, field: value}))
        except SystemExit as exit_:
            assert exit_.code == 1
            lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(f"ERROR: {field}: "), lines
            words = retry_words(stdout.getvalue())
            assert f"{field}=<FIX>" in words and f"{field}={value}" not in words, words
            assert list(out.iterdir()) == [], "a refusal leaves nothing on disk"
            CASES_RUN.append((field, "refused"))
            return
        finally:
            sys.stderr, sys.stdout = old
        parses(Path(project))
        # The answer changed data only: code tokens and data keys equal the defaults' project.
        assert shape(Path(project)) == baseline(cloud, tmp_path_factory.mktemp("baseline")), (field, value)
        CASES_RUN.append((field, "rendered"))

    case()
    outcomes = [o for _, o in CASES_RUN]
    print(f"hostile cases: {len(CASES_RUN)} ({outcomes.count('refused')} refused, "
          f"{outcomes.count('rendered')} rendered) over {len({f for f, _ in CASES_RUN})} fields")
    assert len(CASES_RUN) >= 500
    assert outcomes.count("rendered") >= 10, "the accepted branch must be exercised too"


MARKER_PAYLOADS = [
    "x'''; import os; os.system('touch {m}') #",
    '"; touch {m}; echo "',
    "$(touch {m})",
    "`touch {m}`",
    "{{{{ cycler.__init__.__globals__.os.system('touch {m}') }}}}",
    "{{% set _ = cycler.__init__.__globals__.os.system('touch {m}') %}}",
    "a\nimport os\nos.system('touch {m}')",
]


@pytest.mark.parametrize("field", FREE_TEXT)
def test_injection_never_executes(field, tmp_path):
    marker = tmp_path / "MARKER"
    for payload in MARKER_PAYLOADS:
        value = payload.format(m=marker)
        done = subprocess.run([str(Path(sys.executable).parent / "cookiecutter"), "--no-input", "--output-dir",
                               str(tmp_path / "out"), str(ROOT), f"{field}={value}"],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 1, (field, value, done.stdout)
        assert not marker.exists(), f"{field}={value!r} executed"


def test_payload_would_execute_without_the_guard(tmp_path):
    """Positive control: plain cookiecutter rendering does run a template answer."""
    from cookiecutter.environment import StrictEnvironment

    marker = tmp_path / "MARKER"
    StrictEnvironment().from_string(MARKER_PAYLOADS[4].format(m=marker)).render()
    assert marker.exists()


def test_hook_treats_quotes_as_data(tmp_path):
    """Even past the early check, the hook reads answers as JSON data: ''' cannot end its string."""
    from cookiecutter.environment import StrictEnvironment

    marker = tmp_path / "MARKER"
    answers = {k: v for k, v in CONFIG.items() if not k.startswith("__")} | {"project_name": MARKER_PAYLOADS[0].format(m=marker)}
    source = (ROOT / "hooks" / "pre_gen_project.py").read_text()
    hook = tmp_path / "hook.py"
    hook.write_text(StrictEnvironment().from_string(source).render(cookiecutter=answers))
    done = subprocess.run([sys.executable, str(hook)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("ERROR: project_name: ")
    assert not marker.exists()
