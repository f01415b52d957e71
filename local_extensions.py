"""Jinja extension that checks the answers as soon as they are all given.

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


class AnswerValidation(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        environment.filters["refuse_bad_answers"] = refuse_bad_answers
