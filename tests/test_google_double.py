"""Self-tests of the Google token double (tests/kube_api_double/google.py) and of how the
Kubernetes API double accepts its tokens, on a rendered GKE project's Role and RoleBinding.

Each refusal is shown next to the same request made valid (a positive control), so a test
fails if the rule it names is switched off or if the double refuses everything.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kube_api_double import ApiDouble
from kube_api_double.google import JWT_BEARER, GoogleTokenDouble

PLUGIN = "gke-gcloud-auth-plugin"
STRANGER = "someone-else@other-project.iam.gserviceaccount.com"


@pytest.fixture
def gke(render, tmp_path):
    project = render({"cloud": "gcp", "xcom": False}).path
    spec = importlib.util.spec_from_file_location("rc_google_double", project / "include" / "remote_cluster.py")
    rc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rc)
    role, binding = (yaml.safe_load((project / "k8s" / f"{name}.yaml").read_text()) for name in ("role", "rolebinding"))
    assert binding["subjects"] == [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": rc.RUNNER_IDENTITY}]
    google = GoogleTokenDouble().start()
    api = ApiDouble(rc.REMOTE_NAMESPACE, [role], [binding], google=google).start()
    try:
        key_file = google.write_key_file(rc.RUNNER_IDENTITY, tmp_path / "runner-key.json", rc.GCP_PROJECT_ID)
        yield SimpleNamespace(google=google, api=api, rc=rc, key_file=key_file, tmp=tmp_path)
    finally:
        api.stop()
        google.stop()


def assertion(key_file: Path, *, key: rsa.RSAPrivateKey | None = None, **claims) -> str:
    """A JWT-bearer assertion as Google's client libraries make it from a service-account key file."""
    info = json.loads(key_file.read_text())
    key = key or serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    now = int(time.time())
    body = {"iss": info["client_email"], "aud": info["token_uri"], "iat": now, "exp": now + 3600,
            "scope": "https://www.googleapis.com/auth/cloud-platform"} | claims

    def b64(data: dict | bytes) -> str:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signing_input = f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': info['private_key_id']})}.{b64(body)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


def sign_in(google: GoogleTokenDouble, jwt: str) -> tuple[int, dict]:
    data = urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": jwt}).encode()
    context = ssl.create_default_context(cafile=google.ca_file)
    try:
        with urllib.request.urlopen(urllib.request.Request(google.url, data=data), context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def token_for(gke, email: str) -> str:
    key_file = gke.key_file if email == gke.rc.RUNNER_IDENTITY else gke.google.write_key_file(
        email, gke.tmp / "other-key.json", "other-project")
    status, answer = sign_in(gke.google, assertion(key_file))
    assert status == 200, answer
    return answer["access_token"]


def call(api: ApiDouble, token: str, method: str = "GET", path: str | None = None, body: dict | None = None) -> int:
    path = path or f"/api/v1/namespaces/{api.namespace}/pods"
    context = ssl.create_default_context(cadata=base64.b64decode(api.ca_data).decode())
    request = urllib.request.Request(api.url + path, method=method, headers={"Authorization": f"Bearer {token}"},
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, context=context) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.skipif(shutil.which(PLUGIN) is None, reason=f"{PLUGIN} is not on PATH")
def test_the_real_plugin_signs_in_and_keeps_no_cache_on_adc(gke):
    """Positive control with the real plugin: the token it prints is accepted as the runner."""
    home = gke.tmp / "home"
    (home / ".kube").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "KUBECONFIG"))}
    env.update(HOME=str(home), GOOGLE_APPLICATION_CREDENTIALS=str(gke.key_file), SSL_CERT_FILE=str(gke.google.ca_file))
    printed = []
    for _ in range(2):
        done = subprocess.run([PLUGIN, "--use_application_default_credentials"], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        printed.append(json.loads(done.stdout)["status"])
    tokens = [status["token"] for status in printed]
    assert len(set(tokens)) == 2 and len(gke.google.calls) == 2, "each run signs in again: no cache on this path"
    assert list(home.rglob("*")) == [home / ".kube"], "nothing cached under HOME"
    issued = gke.google.tokens[tokens[0]]
    expires = dt.datetime.strptime(printed[0]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert abs(expires.timestamp() - issued.expiry) < 1, "the plugin reports the token's own expiry"
    assert call(gke.api, tokens[0]) == 200
    assert [r for r in gke.api.requests if r["status"] == 200][-1]["user"] == gke.rc.RUNNER_IDENTITY


def test_a_token_the_double_never_issued_is_401(gke):
    assert call(gke.api, token_for(gke, gke.rc.RUNNER_IDENTITY)) == 200
    assert call(gke.api, "ya29.a-token-google-never-issued") == 401
    refused = [r for r in gke.api.requests if r["status"] == 401][-1]
    assert refused["reason"] == "not an access token the Google token double issued"


def test_an_expired_google_token_is_401(gke):
    gke.google.token_lifetime = 1
    token = token_for(gke, gke.rc.RUNNER_IDENTITY)
    assert call(gke.api, token) == 200
    time.sleep(1.2)
    assert call(gke.api, token) == 401
    assert [r for r in gke.api.requests if r["status"] == 401][-1]["reason"] == "Google access token expired"


def test_revoked_google_tokens_are_401_and_new_ones_work(gke):
    token = token_for(gke, gke.rc.RUNNER_IDENTITY)
    gke.api.revoke_tokens()
    assert call(gke.api, token) == 401
    time.sleep(1.1)
    assert call(gke.api, token_for(gke, gke.rc.RUNNER_IDENTITY)) == 200


@pytest.mark.parametrize("bad", ["signed with another key", "aud is another endpoint", "valid for two hours"])
def test_the_token_endpoint_refuses_a_bad_assertion(gke, bad):
    now = int(time.time())
    changes = {"signed with another key": {"key": rsa.generate_private_key(public_exponent=65537, key_size=2048)},
               "aud is another endpoint": {"aud": "https://oauth2.googleapis.com/token"},
               "valid for two hours": {"exp": now + 7200}}[bad]
    assert sign_in(gke.google, assertion(gke.key_file))[0] == 200, "the same assertion made right is accepted"
    status, answer = sign_in(gke.google, assertion(gke.key_file, **changes))
    assert (status, answer.get("error")) == (400, "invalid_grant"), answer
    reason = {"signed with another key": "Invalid JWT Signature", "aud is another endpoint": "Invalid JWT: aud",
              "valid for two hours": "short-lived token"}[bad]
    assert reason in answer.get("error_description", ""), answer  # refused by the rule under test
    assert len(gke.google.tokens) == 1, "no token for the bad assertion"


def test_a_valid_token_outside_the_rolebinding_is_403_on_pods_create(gke):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "probe-"},
           "spec": {"containers": [{"name": "base", "image": "busybox", "command": ["true"]}]}}
    assert call(gke.api, token_for(gke, gke.rc.RUNNER_IDENTITY), "POST", body=pod) == 201
    assert call(gke.api, token_for(gke, STRANGER), "POST", body=pod) == 403
    # Matched by user, not as the last entry: a request is recorded after its answer is sent, so
    # the first POST's entry can land after the second's (seen once in CI).
    assert [(r["method"], r["status"]) for r in gke.api.requests if r["user"] == STRANGER] == [("POST", 403)], \
        "authenticated as the stranger, then denied"
    assert len(gke.api.created_pods) == 1
