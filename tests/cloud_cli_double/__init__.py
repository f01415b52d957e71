"""Install the recording CLI stand-in (see __main__.py) and read what it recorded."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = ("aws", "eksctl", "gcloud", "az", "kubelogin", "kubectl")


class RecordingStandIn:
    """What the recording stand-ins share: shims in ``root/bin`` that run ``script`` (each sets
    ``<PREFIX>_TOOL``), the remote side's model in ``state.json`` and every call, with whether it
    changed the model, in ``calls.jsonl`` (the script reads ``<PREFIX>_STATE``/``<PREFIX>_LOG``)."""

    def __init__(self, root: Path, state: dict, script: Path, tools: tuple[str, ...], prefix: str):
        self.bin, self.state_file, self.log, self.prefix = root / "bin", root / "state.json", root / "calls.jsonl", prefix
        self.bin.mkdir(parents=True, exist_ok=True)
        for tool in tools:
            path = self.bin / tool
            path.write_text(f'#!/bin/sh\n{prefix}_TOOL={tool} exec {sys.executable} {script} "$@"\n')
            path.chmod(0o755)
        # pyenv's python3 shim puts its own bin (with a real aws) first on PATH: use ours.
        (self.bin / "python3").symlink_to(sys.executable)
        self.state = state

    def env(self, base: dict) -> dict:
        return dict(base, PATH=f"{self.bin}:{base['PATH']}", **{f"{self.prefix}_STATE": str(self.state_file),
                                                              f"{self.prefix}_LOG": str(self.log)})

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    @state.setter
    def state(self, value: dict) -> None:
        self.state_file.write_text(json.dumps(value))

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def changes(self) -> list[list[str]]:
        """The calls that changed the model, as argv lists."""
        return [c["argv"] for c in self.calls() if c["changed"]]

    def reset_log(self) -> None:
        self.log.unlink(missing_ok=True)


class CliDouble(RecordingStandIn):
    """``missing`` names tools to leave out: not installed, and hidden from PATH (the machine's own
    gcloud or kubectl too), so that a script sees them absent as on a laptop without them."""

    def __init__(self, root: Path, state: dict, missing: tuple[str, ...] = ()):
        self.missing, self.root = tuple(missing), root
        assert set(self.missing) <= set(TOOLS), self.missing
        super().__init__(root, state, HERE / "__main__.py", tuple(t for t in TOOLS if t not in self.missing), "CLI_DOUBLE")

    def env(self, base: dict) -> dict:
        return super().env(dict(base, PATH=self.rest_of_path(base["PATH"])))

    def rest_of_path(self, path: str) -> str:
        """The base PATH, or with tools missing, one folder of links to its programs but those tools."""
        if not self.missing:
            return path
        folder = self.root / "system-path"
        if not folder.exists():
            folder.mkdir()
            for directory in path.split(os.pathsep):
                for program in sorted(Path(directory).glob("*")) if Path(directory).is_dir() else []:
                    link = folder / program.name
                    if program.name not in TOOLS and not os.path.lexists(link) and os.access(program, os.X_OK):
                        link.symlink_to(program)
        return str(folder)
