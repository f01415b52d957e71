"""Install the recording Astro CLI stand-in (see __main__.py) and read what it recorded."""

from __future__ import annotations

from pathlib import Path

from cloud_cli_double import RecordingStandIn

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


class AstroDouble(RecordingStandIn):
    def __init__(self, root: Path, state: dict):
        super().__init__(root, state, HERE / "__main__.py", ("astro",), "ASTRO_DOUBLE")
