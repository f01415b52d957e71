"""Jinja extension: answers are data, never templates, and are checked as soon as given.

cookiecutter renders every answer given with --no-input (command line, replay, API) as a
Jinja template, so an answer like ``{{ ''.__class__ }}`` would run before any check.
``preprocess`` lets through only the template sources this repository wrote (cookiecutter.json
values, hook files, file and folder names) and turns any other source with template syntax
into a literal, which the field rules then refuse like any bad answer.

cookiecutter prints a traceback when a hook fails, so the refusal happens here, before
cookiecutter creates anything: the last private variable of cookiecutter.json
(``__answers_checked``) passes all answers through ``refuse_bad_answers``, which applies the
rules of hooks/pre_gen_project.py (the single place they are written), prints one
``ERROR: <field>: ...`` line per bad answer on stderr, then on stdout the command that retries
with every other answer kept (each refused one as ``<FIX>``), and exits 1. The pre-generation
hook repeats the check as a backstop.

In an interactive run (``install_prompts``) a question is asked only where it matters and a bad
answer is asked again on the spot: another cloud's questions (``<cloud>_*``, and the options a
cloud does not offer) are not asked and keep their defaults, and an answer that breaks its own
field's rule prints its ``ERROR:`` line and the question comes back. cookiecutter has no hook
between questions (its pre-prompt hook runs before the first, its nested templates would split
the project in one copy per cloud), so this wraps the three functions of ``cookiecutter.prompt``
that ask, for this process only and only where their signatures are the ones it was written
for (cookiecutter 2.2 to 2.7); elsewhere every question is asked, as before. Rules that join
several answers (an ARN's partition and the region, distinct Azure ids) are checked at the end.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import shlex
import sys
from pathlib import Path

from jinja2 import pass_environment
from jinja2.ext import Extension

ROOT = Path(__file__).resolve().parent
TEMPLATE_DIR = ROOT / "{{cookiecutter.project_slug}}"
SYNTAX = ("{{", "{%", "{#")
FIX = "<FIX>"
# Options of the cookiecutter and `cruft create` commands that a retry must not repeat.
NOT_REPEATED = {"no_input", "extra_context", "extra_context_file", "replay", "replay_file", "verbose", "debug_file",
                "list_installed", "version", "help"}


def _strings(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*map(_strings, value.values()), set())
    if isinstance(value, list):
        return set().union(*map(_strings, value), set())
    return set()


def _config() -> dict:
    return json.loads((ROOT / "cookiecutter.json").read_text())


def _our_sources() -> set[str]:
    sources = _strings(_config())
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
    written, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = written
    return module


def _derived_slug(environment, answers: dict) -> str | None:
    """The slug cookiecutter.json derives from this project_name (its expression, not a copy)."""
    try:
        return environment.from_string(_config()["project_slug"]).render(cookiecutter=answers)
    except Exception:  # noqa: BLE001 - a name the expression cannot take derives nothing
        return None


def kept_answers(answers: dict, refused: set[str], derived_slug: str | None) -> dict[str, str]:
    """What a retry needs: every answer, refused ones as FIX; left out are a derived slug (it follows
    the name) and other clouds' answers still at their defaults (nobody typed them)."""
    defaults, clouds, kept = _config(), answers.get("_clouds", {}), {}
    for key, value in answers.items():
        owner = key.split("_")[0]
        if key in refused:
            kept[key] = FIX
        elif key.startswith("_") or key not in defaults or (key == "project_slug" and value == derived_slug):
            continue
        elif owner in clouds and owner != answers.get("cloud") and value == defaults[key]:
            continue
        else:
            kept[key] = ("yes" if value else "no") if isinstance(value, bool) else str(value)
    return kept


def _command_context():
    """The running command's parsed arguments: cookiecutter's CLI is click, cruft's is typer's copy of click."""
    for module in ("click.globals", "typer._click.globals"):
        try:
            ctx = importlib.import_module(module).get_current_context(silent=True)
        except (ImportError, AttributeError):
            continue
        if ctx is not None:
            return ctx
    return None


def retry_words(kept: dict[str, str]) -> list[str]:
    """The command that was run (cookiecutter or cruft create, same template and options), with --no-input and
    the answers; from the Python API, cookiecutter on this template folder."""
    ctx = _command_context()
    names = {p.name for p in ctx.command.params} if ctx else set()
    if not names & {"template", "template_git_url"}:
        return ["cookiecutter", "--no-input", str(ROOT), *(f"{k}={v}" for k, v in kept.items())]
    words, template = [*ctx.command_path.split(), "--no-input"], []
    for param in ctx.command.params:
        value, option = ctx.params.get(param.name), max(param.opts, key=len)
        if param.name in ("template", "template_git_url"):
            template = [str(value)]
        elif param.name in NOT_REPEATED or value in (None, False, (), []) or str(value) == str(param.default):
            continue
        elif getattr(param, "is_flag", False):
            words.append(option)
        else:
            words += [w for v in (value if getattr(param, "multiple", False) else [value]) for w in (option, str(v))]
    if "template_git_url" in names:  # cruft create takes the answers as JSON
        return [*words, *template, "--extra-context", json.dumps(kept)]
    return [*words, *template, *(f"{k}={v}" for k, v in kept.items())]


def shell_lines(words: list[str], width: int = 100) -> str:
    """Shell-quoted (answers are data), wrapped with backslash continuations."""
    lines = [""]
    for word in map(shlex.quote, words):
        if lines[-1] and len(lines[-1]) + len(word) > width:
            lines.append("")
        lines[-1] += (" " if lines[-1] else "") + word
    return " \\\n    ".join(lines)


@pass_environment
def refuse_bad_answers(environment, answers) -> str:
    answers = dict(answers)
    errors = _rules().check(answers)
    if not errors:
        return "yes"
    slug = _derived_slug(environment, answers)
    if "project_name" in errors and answers.get("project_slug") == slug:
        errors.pop("project_slug", None)  # the slug follows the name: fixing the name fixes it
    print("\n".join(errors.values()), file=sys.stderr, flush=True)
    print(f"Nothing was written. To retry with your other answers, replace each {FIX} below and run:\n  "
          + shell_lines(retry_words(kept_answers(answers, set(errors), slug))), flush=True)
    raise SystemExit(1)


# The prompt functions wrapped, with the parameters they were written for.
PROMPT_FUNCTIONS = {
    "read_user_variable": ["var_name", "default_value", "prompts", "prefix"],
    "read_user_yes_no": ["var_name", "default_value", "prompts", "prefix"],
    "prompt_choice_for_config": ["cookiecutter_dict", "env", "key", "options", "no_input", "prompts", "prefix"],
}


def not_asked(key: str, answers: dict, clouds: dict) -> bool:
    """Another cloud's question, or an option the chosen cloud does not offer."""
    cloud = answers.get("cloud")
    if cloud not in clouds:
        return False
    if key.split("_")[0] in clouds:
        return key.split("_")[0] != cloud
    return key in ("pod_operator", "gpu_node_group") and not clouds[cloud]["native" if key == "pod_operator" else key]


def refusal_on_the_spot(rules, key: str, value, answers: dict) -> str | None:
    """The ERROR line of an answer breaking its own field's rule (hooks/pre_gen_project.py), or None."""
    rule = rules.CLUSTER_NAME.get(str(answers.get("cloud"))) if key == "cluster_name" else rules.RULES.get(key)
    if rule is None or rules.fits(value, rule):
        return None
    return rules.refusal(key, value, rule)


def install_prompts() -> None:
    try:
        from cookiecutter import prompt
    except ImportError:
        return
    if getattr(prompt, "_kpo_prompts", False):
        return
    for name, params in PROMPT_FUNCTIONS.items():
        function = getattr(prompt, name, None)
        if not callable(function) or list(inspect.signature(function).parameters) != params:
            return  # another cookiecutter: every question is asked, the answers checked at the end
    # The main template's rules and cloud table, also when the cluster/ template loads this file.
    rules = _rules()
    clouds = json.loads((Path(__file__).parent / "cookiecutter.json").read_text())["_clouds"]
    given: list[dict] = [{}]  # cookiecutter's own dict of the answers so far (the choices pass it)
    read_variable, read_yes_no, choice = prompt.read_user_variable, prompt.read_user_yes_no, prompt.prompt_choice_for_config

    def asking(read):
        def ask(var_name, default_value, prompts=None, prefix=""):
            if not_asked(var_name, given[0], clouds):
                return default_value
            while True:
                value = read(var_name, default_value, prompts, prefix)
                line = refusal_on_the_spot(rules, var_name, value, given[0])
                if line is None:
                    return value
                print(line, file=sys.stderr, flush=True)
        return ask

    def choosing(cookiecutter_dict, env, key, options, no_input, prompts=None, prefix=""):
        given[0] = cookiecutter_dict
        if not_asked(key, cookiecutter_dict, clouds):
            no_input = True  # cookiecutter's own default: the first option
        return choice(cookiecutter_dict, env, key, options, no_input, prompts, prefix)

    prompt.read_user_variable = asking(read_variable)
    prompt.read_user_yes_no = asking(read_yes_no)
    prompt.prompt_choice_for_config = choosing
    prompt._kpo_prompts = True


def install(ext, environment) -> None:
    install_prompts()
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
    written, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = written
    return module


class AnswerValidation(Extension):
    """A shim that never changes: the behaviour is in install() and preprocess() above."""

    def __init__(self, environment):
        super().__init__(environment)
        self.current = _current_module()
        self.current.install(self, environment)

    def preprocess(self, source, name, filename=None):
        return self.current.preprocess(self, source, name)
