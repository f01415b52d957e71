"""Jinja extension: answers are data, never templates, and are checked as soon as given.

cookiecutter renders every answer given with --no-input (command line, replay, API) as a
Jinja template, so an answer like ``{{ ''.__class__ }}`` would run before any check.
``preprocess`` lets through only the template sources this repository wrote (cookiecutter.json
values, hook files, file and folder names) and turns any other source with template syntax
into a literal, which the field rules then refuse like any bad answer.

cookiecutter prints a traceback when a hook fails, so the one-line refusal happens here,
before cookiecutter creates anything: the last private variable of cookiecutter.json
(``__answers_checked``) passes all answers through ``refuse_bad_answers``, which applies the
rules of hooks/pre_gen_project.py (the single place they are written) and exits 1 with
one ``ERROR: <field>: ...`` line. The pre-generation hook repeats the check as a backstop.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from jinja2.ext import Extension

ROOT = Path(__file__).resolve().parent
TEMPLATE_DIR = ROOT / "{{cookiecutter.project_slug}}"
SYNTAX = ("{{", "{%", "{#")


def _strings(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*map(_strings, value.values()), set())
    if isinstance(value, list):
        return set().union(*map(_strings, value), set())
    return set()


def _our_sources() -> set[str]:
    import json

    sources = _strings(json.loads((ROOT / "cookiecutter.json").read_text()))
    sources |= {p.read_text() for p in (ROOT / "hooks").glob("*.py")}
    return sources


def _is_our_path(source: str) -> bool:
    try:
        return (ROOT / source).exists() or (TEMPLATE_DIR / source).exists()
    except (OSError, ValueError):
        return False


def _rules():
    spec = importlib.util.spec_from_file_location("pre_gen_rules", Path(__file__).parent / "hooks" / "pre_gen_project.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refuse_bad_answers(answers) -> str:
    rules = _rules()
    error = rules.check_fields(dict(answers)) or rules.check_combinations(dict(answers))
    if error:
        print(error, file=sys.stderr)
        raise SystemExit(1)
    return "yes"


def install(ext, environment) -> None:
    environment.filters["refuse_bad_answers"] = refuse_bad_answers
    ext.ours = _our_sources()
    ext.literals = {}


def preprocess(ext, source: str, name) -> str:
    if name is not None or not any(s in source for s in SYNTAX) or source in ext.ours or _is_our_path(source):
        return source
    key = ext.literals.setdefault(source, f"_kpo_literal_{len(ext.literals)}")
    ext.environment.globals[key] = source
    return "{{ " + key + " }}"


def _current_module():
    """This file as it is on disk now. `cruft update` renders two template commits from one
    path in one process; Python would otherwise keep the first commit's module for both."""
    spec = importlib.util.spec_from_file_location("_local_extensions_current", __file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class AnswerValidation(Extension):
    """A shim that never changes: the behaviour is in install() and preprocess() above."""

    def __init__(self, environment):
        super().__init__(environment)
        self.current = _current_module()
        self.current.install(self, environment)

    def preprocess(self, source, name, filename=None):
        return self.current.preprocess(self, source, name)
