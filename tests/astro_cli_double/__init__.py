"""Install the recording Astro CLI stand-in (see __main__.py) and read what it recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPLOYMENT_ID = "clx0remotekpo0deploy0001"
WEBSERVER_URL = "example-org.astronomer.run/d0remotekpo"


def deployment(name: str = "remote-kpo-prod", **changes) -> dict:
    """One deployment as the model holds it: nothing of this project loaded yet (Airflow's own
    default_pool exists in every deployment)."""
    return {"name": name, "webserver_url": WEBSERVER_URL, "variables": {},
            "pools": {"default_pool": {"slots": 128, "description": "Default pool"}}, "deploys": [], **changes}


def signed_in(**deployments: dict) -> dict:
    return {"logged_in": True, "deployments": deployments or {DEPLOYMENT_ID: deployment()}}


class AstroDouble:
    def __init__(self, root: Path, state: dict):
        self.bin, self.state_file, self.log = root / "bin", root / "state.json", root / "calls.jsonl"
        self.bin.mkdir(parents=True, exist_ok=True)
        path = self.bin / "astro"
        path.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / "__main__.py"} "$@"\n')
        path.chmod(0o755)
        # pyenv's python3 shim may put another interpreter first on PATH: use ours.
        (self.bin / "python3").symlink_to(sys.executable)
        self.state_file.write_text(json.dumps(state))

    def env(self, base: dict) -> dict:
        return dict(base, PATH=f"{self.bin}:{base['PATH']}", ASTRO_DOUBLE_STATE=str(self.state_file),
                    ASTRO_DOUBLE_LOG=str(self.log))

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
