"""Install the recording CLI stand-in (see __main__.py) and read what it recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = ("aws", "eksctl", "gcloud", "az", "kubelogin", "kubectl")


class CliDouble:
    def __init__(self, root: Path, state: dict):
        self.bin, self.state_file, self.log = root / "bin", root / "state.json", root / "calls.jsonl"
        self.bin.mkdir(parents=True, exist_ok=True)
        for tool in TOOLS:
            path = self.bin / tool
            path.write_text(f'#!/bin/sh\nCLI_DOUBLE_TOOL={tool} exec {sys.executable} {HERE / "__main__.py"} "$@"\n')
            path.chmod(0o755)
        # pyenv's python3 shim puts its own bin (with a real aws) first on PATH: use ours.
        (self.bin / "python3").symlink_to(sys.executable)
        self.state_file.write_text(json.dumps(state))

    def env(self, base: dict) -> dict:
        return dict(base, PATH=f"{self.bin}:{base['PATH']}", CLI_DOUBLE_STATE=str(self.state_file),
                    CLI_DOUBLE_LOG=str(self.log))

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def changes(self) -> list[list[str]]:
        """The calls that changed the remote side, as argv lists."""
        return [c["argv"] for c in self.calls() if c["changed"]]

    def reset_log(self) -> None:
        self.log.unlink(missing_ok=True)
