"""A recording stand-in for the Astro CLI (`astro`), for scripts/deploy.sh tests.

SIMULATED: no Astro organization is reachable here. This program is installed as `astro` and
keeps a model of the Astro side in a JSON state file: whether you are signed in (or which
ASTRO_API_TOKEN values are valid), and per deployment its environment variables (value, secret
or not), its Airflow pools and the code it runs. It answers the calls scripts/deploy.sh makes
in the shapes the real CLI prints, with the real CLI's rules where they matter here:

- `deployment variable create --load` fails on a key the deployment already has; `update
  --load` creates or updates (an upsert); a secret stays secret; the env file is read as the CLI
  reads it (comments and blank lines skipped, split at the first `=`, one layer of `"`/`'`
  quotes trimmed); `variable list` shows a secret's key only, never its value.
- `deployment pool create` fails on an existing pool, `update` on a missing one.
- `deploy <id>` runs from an Astro project folder only, and the model records the code it
  ships (a digest of dags/, include/, plugins/, Dockerfile, requirements.txt, packages.txt): a
  deploy of the code the deployment already runs is no change to the model, which holds what
  runs, not a deploy history.
- Signed out (and no valid ASTRO_API_TOKEN), every call but `version` fails as the CLI does;
  an unknown deployment id fails with the CLI's "not found" message.

Every call is appended to a log with whether it changed the model. A call, subcommand or flag it
does not know fails with exit 97, so the script cannot drift from what the double checks.

Environment: ASTRO_DOUBLE_STATE (state file), ASTRO_DOUBLE_LOG (JSON-lines call log).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

STATE = Path(os.environ["ASTRO_DOUBLE_STATE"])
LOG = Path(os.environ["ASTRO_DOUBLE_LOG"])
NOT_SIGNED_IN = "no context set, have you authenticated to Astro or Astro Private Cloud? Run astro login and try again"
NOT_FOUND = ("the Deployment specified was not found in this workspace. Your account or API Key may not have access "
             "to the deployment specified")
MASKED = "****"
CODE = ("dags", "include", "plugins", "Dockerfile", "requirements.txt", "packages.txt")

# (command words) -> (flags that take a value, flags that take none, number of positional args)
COMMANDS = {
    ("version",): (set(), set(), 0),
    ("deployment", "inspect"): ({"--deployment-id", "--key", "--output"}, set(), 0),
    ("deployment", "variable", "list"): ({"--deployment-id"}, set(), 0),
    ("deployment", "variable", "create"): ({"--deployment-id", "--env"}, {"--load", "--secret"}, 0),
    ("deployment", "variable", "update"): ({"--deployment-id", "--env"}, {"--load", "--secret"}, 0),
    ("deployment", "pool", "list"): ({"--deployment-id"}, set(), 0),
    ("deployment", "pool", "create"): ({"--deployment-id", "--name", "--slots", "--description"}, set(), 0),
    ("deployment", "pool", "update"): ({"--deployment-id", "--name", "--slots", "--description"}, set(), 0),
    ("deploy",): (set(), set(), 1),
}


class Failed(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def parse(args: list[str]) -> tuple[tuple[str, ...], dict, list[str]]:
    """Split argv into the command, its flags and its positional arguments; refuse the unknown."""
    for size in (3, 2, 1):
        command = tuple(args[:size])
        if command in COMMANDS:
            break
    else:
        raise Failed(f"astro double: astro {' '.join(args[:3])} is not simulated", 97)
    valued, plain, positional_count = COMMANDS[command]
    flags: dict = {}
    positional: list[str] = []
    rest = args[len(command):]
    while rest:
        word, rest = rest[0], rest[1:]
        name, eq, value = word.partition("=")
        if name in valued:
            if not eq:
                if not rest:
                    raise Failed(f"flag needs an argument: {name}")
                value, rest = rest[0], rest[1:]
            flags[name] = value
        elif word in plain:
            flags[word] = True
        elif word.startswith("-"):
            raise Failed(f"astro double: flag {word} of astro {' '.join(command)} is not simulated", 97)
        else:
            positional.append(word)
    if len(positional) != positional_count:
        raise Failed(f"astro double: astro {' '.join(command)} with arguments {positional} is not simulated", 97)
    return command, flags, positional


def signed_in(state: dict) -> bool:
    token = os.environ.get("ASTRO_API_TOKEN", "")
    return bool(state.get("logged_in")) or (token != "" and token in state.get("api_tokens", []))


def find(state: dict, deployment_id: str | None) -> dict:
    if not deployment_id:
        raise Failed("astro double: the deployment is chosen interactively without --deployment-id; not simulated", 97)
    found = state.get("deployments", {}).get(deployment_id)
    if found is None:
        raise Failed(NOT_FOUND)
    return found


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(" " + "    ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def env_file(path: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(key, value) pairs and refusals, as the CLI reads a --load file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        return [], [f"{path}: unable to read file: {err}"]
    pairs, invalid, seen = [], [], set()
    for number, line in enumerate(lines, 1):
        if line.startswith("#") or line == "":
            continue
        key, eq, value = line.partition("=")
        if not eq:
            invalid.append(f"line {number}: not a key=value pair")
        elif key == "":
            invalid.append(f"line {number}: blank key")
        elif value == "":
            invalid.append(f"{key}: blank value")
        elif key in seen:
            invalid.append(f"{key}: declared twice in the file")
        else:
            seen.add(key)
            pairs.append((key, value.strip('"').strip("'").strip()))
    return pairs, invalid


def variables(found: dict, flags: dict, update: bool) -> str:
    if not flags.get("--load"):
        raise Failed("astro double: variables given as key=value arguments are not simulated", 97)
    pairs, invalid = env_file(flags.get("--env", ".env"))
    held = found["variables"]
    done = []
    for key, value in pairs:
        if key in held and not update:
            invalid.append(f"{key}: already set on the Deployment; use the update command to change it")
            continue
        # A variable can be made secret, never public again.
        secret = bool(flags.get("--secret")) or held.get(key, {}).get("secret", False)
        done.append(f"{'updated' if key in held else 'created'} {key}")
        held[key] = {"value": value, "secret": secret}
    if invalid:
        raise Failed("some variables were not set: " + "; ".join(invalid))
    return "\n".join(done)


def pools(found: dict, command: str, flags: dict) -> str:
    held = found["pools"]
    if command == "list":
        return table(["NAME", "SLOTS"], [[name, str(pool["slots"])] for name, pool in held.items()])
    name = flags.get("--name")
    if not name:
        raise Failed("a pool name is needed: use the --name flag")
    try:
        slots = int(flags.get("--slots", "0"))
    except ValueError:
        raise Failed(f'invalid argument "{flags["--slots"]}" for "-s, --slots" flag') from None
    if command == "create" and name in held:
        raise Failed(f"API error (409): Pool {name} already exists")
    if command == "update" and name not in held:
        raise Failed(f"API error (404): Pool {name} not found")
    held[name] = {"slots": slots, "description": flags.get("--description", "")}
    return f"{'Creating' if command == 'create' else 'updating'} pool {name}"


def code_digest(project: Path) -> str:
    digest = hashlib.sha256()
    for top in CODE:
        paths = sorted(p for p in (project / top).rglob("*") if p.is_file()) if (project / top).is_dir() else \
            [project / top] if (project / top).is_file() else []
        for path in paths:
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def deploy(found: dict, deployment_id: str) -> str:
    project = Path.cwd()
    if not (project / ".astro" / "config.yaml").is_file():
        raise Failed("this is not an Astro project directory. Change to another directory or run astro dev init")
    code = code_digest(project)
    if not found["deploys"] or found["deploys"][-1] != code:
        found["deploys"].append(code)
    return f"Deployed code {code} to {deployment_id}\nSuccessfully pushed image to Astro"


def inspect(found: dict, deployment_id: str, flags: dict) -> str:
    doc = {"deployment": {"configuration": {"name": found["name"]},
                          "metadata": {"deployment_id": deployment_id, "webserver_url": found["webserver_url"]}}}
    key = flags.get("--key")
    if key:
        value = doc["deployment"]
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise Failed(f"requested key not found: {key}")
            value = value[part]
        return str(value)
    if flags.get("--output", "yaml") != "json":
        raise Failed("astro double: inspect --output yaml is not simulated", 97)
    return json.dumps(doc, indent=2)


def run(state: dict, args: list[str]) -> str:
    command, flags, positional = parse(args)
    if command == ("version",):
        return "Astro CLI Version: 1.38.1 (double)"
    if not signed_in(state):
        raise Failed(NOT_SIGNED_IN)
    if command == ("deploy",):
        return deploy(find(state, positional[0]), positional[0])
    found = find(state, flags.get("--deployment-id"))
    if command == ("deployment", "inspect"):
        return inspect(found, flags["--deployment-id"], flags)
    if command == ("deployment", "variable", "list"):
        rows = [[str(n), key, MASKED if v["secret"] else v["value"], str(v["secret"]).lower()]
                for n, (key, v) in enumerate(found["variables"].items(), 1)]
        return table(["#", "KEY", "VALUE", "SECRET"], rows) if rows else "\nNo variables found"
    if command[1] == "variable":
        return variables(found, flags, update=command[2] == "update")
    return pools(found, command[2], flags)


def main() -> int:
    args = sys.argv[1:]
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    before = json.dumps(state, sort_keys=True)
    code, out, err = 0, "", ""
    try:
        out = run(state, args)
    except Failed as failure:
        code, err = failure.code, f"Error: {failure}"
    changed = json.dumps(state, sort_keys=True) != before
    if changed:
        STATE.write_text(json.dumps(state, indent=1))
    with LOG.open("a") as log:
        log.write(json.dumps({"argv": ["astro", *args], "changed": changed, "exit": code, "cwd": os.getcwd()}) + "\n")
    if out:
        print(out)
    if err:
        print(err, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
