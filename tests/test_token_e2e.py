"""Generic clusters: the preflight DAG reports the ServiceAccount token's time left, warns under a
quarter of its lifetime and fails once it expired, run in real Airflow against the API double
(tests/e2e_harness.py says what is real and what is simulated).

The harness mints the connection's token when the run starts, so it has its whole lifetime left.
A token minted earlier, or expired, is signed here with the double's own key (what the API server
would have issued then), and put into the connection in place of the harness's one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time

import pytest
from e2e_harness import Cluster, migrate


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home"))


@pytest.fixture
def cluster(render, airflow_home, tmp_path):
    with Cluster(render({"cloud": "generic", "xcom": False}).path, airflow_home, tmp_path, sa_token_ttl=24 * 3600) as running:
        yield running


def issued(cluster: Cluster, issued_ago: float, expires_in: float) -> None:
    """Replace the connection's token by one the double issued `issued_ago` seconds ago."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    rc = cluster.rc
    now = time.time()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": f"system:serviceaccount:{rc.REMOTE_NAMESPACE}:{rc.SERVICE_ACCOUNT}",
                             "iat": int(now - issued_ago), "exp": int(now + expires_in)}).encode())
    signature = b64(hmac.new(cluster.double.sa_tokens.key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
    key = f"AIRFLOW_CONN_{rc.KUBERNETES_CONN_ID.upper()}"
    connection = json.loads(cluster.connections[key])
    connection["extra"]["kube_config"]["users"][0]["user"]["token"] = f"{header}.{claims}.{signature}"
    cluster.connections[key] = json.dumps(connection)


def test_time_left_is_reported(cluster):
    result = cluster.run("check_remote_cluster")
    assert result.succeeded, result.log[-4000:]
    assert "[ok] credentials  ServiceAccount token valid until" in result.log
    assert "h of 24.0 h left)" in result.log


def test_under_a_quarter_left_warns_and_the_run_succeeds(cluster):
    issued(cluster, issued_ago=20 * 3600, expires_in=3600)  # 1 h of 21 h left
    result = cluster.run("check_remote_cluster")
    assert result.succeeded, result.log[-4000:]
    assert "[warn] credentials  ServiceAccount token valid until" in result.log
    assert re.search(r"\[warning\s*\] ServiceAccount token valid until .* under a quarter", result.log), "logged as a warning"
    assert "of its 21.0 h left, under a quarter: rotate it soon: scripts/deploy.sh" in result.log
    assert ": ready (see the warning)" in result.log
    assert "[ok] permissions  all" in result.log, "the other steps ran with that token"


def test_an_expired_token_fails_naming_the_rotation(cluster):
    issued(cluster, issued_ago=25 * 3600, expires_in=-3600)
    result = cluster.run("check_remote_cluster")
    assert not result.succeeded
    assert "the ServiceAccount token expired at" in result.log
    assert "--rotate-token" in result.log
    assert "[ok] permissions" not in result.log
