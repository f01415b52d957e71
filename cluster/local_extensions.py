"""Jinja extension of the cluster/ template: the main template's own (../local_extensions.py, loaded
by path), pointed at this template's sources.

So the same holds here: answers are data, never templates (any answer with template syntax is
turned into a literal, which the rules refuse), and bad answers are refused while prompting, before
cookiecutter creates anything: one ``ERROR: <field>: ...`` line each on stderr, then the command
that retries with the other answers kept, exit 1. The rules are the main template's field rules
plus hooks/pre_gen_project.py here (cluster id, project, collisions with the project's clusters).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from jinja2 import pass_environment
from jinja2.ext import Extension

HERE = Path(__file__).resolve().parent
MAIN = HERE.parent
# Answers cookiecutter.json derives from cluster_id: they follow it when it is refused.
DERIVED = ("cluster_name", "kubernetes_conn_id")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    written, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = written
    return module


def _main_extension():
    """A fresh copy of the main template's extension whose "our sources" are this template's."""
    module = _load(MAIN / "local_extensions.py", "_kpo_main_local_extensions")
    module.ROOT = HERE
    module.TEMPLATE_DIR = HERE / "{{cookiecutter.__workdir}}"
    return module


def project_root() -> Path:
    """Where the cluster is added: cookiecutter's -o/--output-dir (the project root), else here."""
    ctx = _main_extension()._command_context()
    output_dir = ctx.params.get("output_dir") if ctx is not None else None
    return Path(output_dir or ".").resolve()


@pass_environment
def refuse_bad_answers(environment, answers) -> str:
    main = _main_extension()
    clouds = json.loads((MAIN / "cookiecutter.json").read_text())["_clouds"]
    answers = {**dict(answers), "_clouds": clouds}
    config = main._config()
    derived = {}
    for key in DERIVED:
        try:
            derived[key] = environment.from_string(config[key]).render(cookiecutter=answers)
        except Exception:  # noqa: BLE001 - an id the expression cannot take derives nothing
            pass
    errors = _load(HERE / "hooks" / "pre_gen_project.py", "_kpo_cluster_rules").check(
        answers, project_root(), main._rules(), derived)
    if not errors:
        return "yes"
    print("\n".join(errors.values()), file=sys.stderr, flush=True)
    kept = main.kept_answers(answers, set(errors), None)
    kept = {k: v for k, v in kept.items() if k != "project" and not (k in derived and v == derived[k])}
    retry = main.retry_words(kept)
    if set(errors) == {"project"}:  # nothing to fix in the answers: only where the command runs
        retry = [w for i, w in enumerate(retry) if w not in ("-o", "--output-dir")
                 and (i == 0 or retry[i - 1] not in ("-o", "--output-dir"))]
        print("Nothing was written. cd <your project folder>, then run:\n  " + main.shell_lines(retry), flush=True)
        raise SystemExit(1)
    print(f"Nothing was written. To retry with your other answers, replace each {main.FIX} below and run:\n  "
          + main.shell_lines(retry), flush=True)
    raise SystemExit(1)


class AnswerValidation(Extension):
    """The main template's behaviour (install, preprocess) with this template's sources and filter."""

    def __init__(self, environment):
        super().__init__(environment)
        self.current = _main_extension()
        self.current.install(self, environment)
        environment.filters["refuse_bad_answers"] = refuse_bad_answers

    def preprocess(self, source, name, filename=None):
        return self.current.preprocess(self, source, name)
