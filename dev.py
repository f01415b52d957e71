#!/usr/bin/env python3
"""The template's two commands, on nothing but Python 3.11+ and git.

  python3 dev.py render [key=value ...]   render a project into ./out (defaults: cloud=aws)
  python3 dev.py test [pytest args ...]   make .venv from the hash-pinned lock, run every test

`python3 dev.py lock` re-resolves requirements/*.in into the hash-pinned *.lock files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REQ = ROOT / "requirements"


def bin_of(env: Path, name: str) -> str:
    return str(env / ("Scripts" if os.name == "nt" else "bin") / name)


def ensure_env(env: Path, lock: Path) -> None:
    """Create or refresh a virtualenv so it holds exactly the lock file's pinned, hashed set.

    Safe to call from parallel test workers: they wait on a lock file and the first one builds.
    """
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as guard:
        if os.name != "nt":
            import fcntl

            fcntl.flock(guard, fcntl.LOCK_EX)
        _ensure_env(env, lock)


def _ensure_env(env: Path, lock: Path) -> None:
    stamp = env / ".lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print(f"dev.py: installing {lock.relative_to(ROOT)} into {env.name}/ (first run takes a few minutes)", flush=True)
    if not Path(bin_of(env, "python")).exists():
        venv.create(env, with_pip=True)
    python = bin_of(env, "python")
    quiet = ["--quiet", "--disable-pip-version-check"]
    subprocess.run([python, "-m", "pip", "install", *quiet, "--require-hashes", "--no-deps",
                    "-r", str(REQ / "bootstrap.lock")], check=True)
    # --system-certs: uv's own CA roots fail behind TLS-re-signing proxies where pip works.
    subprocess.run([bin_of(env, "uv"), "pip", "sync", "--quiet", "--system-certs", "--python", python,
                    "--require-hashes", str(lock)], check=True)
    stamp.write_text(digest)


def render(args: list[str]) -> int:
    env = ROOT / ".venv-render"
    ensure_env(env, REQ / "render.lock")
    if not any(a.startswith("cloud=") for a in args):
        args = ["cloud=aws", *args]
    out = ROOT / "out"
    cmd = [bin_of(env, "cookiecutter"), "--no-input", "--overwrite-if-exists", "--output-dir", str(out), str(ROOT), *args]
    before = {p: p.stat().st_mtime for p in out.iterdir()} if out.is_dir() else {}
    code = subprocess.run(cmd).returncode
    made = [p for p in (out.iterdir() if out.is_dir() else []) if p.is_dir() and before.get(p) != p.stat().st_mtime]
    if code == 0 and len(made) == 1:  # the hook's "cd <slug>" is relative to ./out, not to here
        print(f"The project is in {os.path.relpath(made[0])}: cd {os.path.relpath(made[0])}", file=sys.stderr)
    return code


def test(args: list[str]) -> int:
    env = ROOT / ".venv"
    ensure_env(env, REQ / "test.lock")
    ensure_env(ROOT / ".venv-checkov", REQ / "checkov.lock")  # checkov pins an old boto3: its own env
    return subprocess.run([bin_of(env, "python"), "-m", "pytest", *args], cwd=ROOT).returncode


def lock(_: list[str]) -> int:
    uv = bin_of(ROOT / ".venv", "uv")
    for source in sorted(REQ.glob("*.in")):
        target = source.with_suffix(".lock")
        subprocess.run([uv, "pip", "compile", "--quiet", "--system-certs", "--universal", "--python-version", "3.11",
                        "--generate-hashes", str(source.relative_to(ROOT)), "-o", str(target.relative_to(ROOT))],
                       cwd=ROOT, check=True)
    return 0


COMMANDS = {"render": render, "test": test, "lock": lock}

if __name__ == "__main__":
    if sys.version_info < (3, 11):  # noqa: UP036 - runs under whatever python3 the user has
        sys.exit("dev.py: needs Python 3.11 or newer")
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
