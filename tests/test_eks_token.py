"""The rendered EKS exec plugin, run for real: fake credentials, and a local STS stand-in.

No AWS is reachable here. A 30-line HTTP server on 127.0.0.1 answers AssumeRole the way STS
does (XML with temporary credentials) and records the request; botocore, the plugin and the
presigning are real. The token is then decoded the way EKS does to check what it names.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

ASSUME_ROLE_XML = """<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>ASIATEMPORARYKEY0001</AccessKeyId><SecretAccessKey>tempsecret</SecretAccessKey>
<SessionToken>tempsessiontoken</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/airflow-remote-kpo</Arn>
<AssumedRoleId>AROAEXAMPLE:airflow-remote-kpo</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>
<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"""


@pytest.fixture
def fake_sts():
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            calls.append({k: v[0] for k, v in parse_qs(body).items()})
            payload = ASSUME_ROLE_XML.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()


def plugin_args(project) -> list[str]:
    import yaml

    settings = yaml.safe_load((project.path / "airflow_settings.yaml").read_text())["airflow"]
    plugin = settings["connections"][0]["conn_extra"]["kube_config"]["users"][0]["user"]["exec"]
    assert plugin["command"] == "python"
    return [arg.replace("/usr/local/airflow", str(project.path)) for arg in plugin["args"]]


def decode(token: str) -> dict:
    assert token.startswith("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(token[len("k8s-aws-v1."):] + "==").decode()
    parsed = urlparse(url)
    return {"host": parsed.netloc, **{k: v[0] for k, v in parse_qs(parsed.query).items()}}


BASE_ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLECALLER01", "AWS_SECRET_ACCESS_KEY": "secret", "PATH": "/usr/bin:/bin",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "KUBERNETES_EXEC_INFO": json.dumps({"apiVersion": "client.authentication.k8s.io/v1"})}


def test_plugin_assumes_the_runner_role_with_external_id(render, fake_sts):
    project = render({"cloud": "aws", "xcom": True})
    endpoint, calls = fake_sts
    args = plugin_args(project)
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          env=BASE_ENV | {"AWS_ENDPOINT_URL_STS": endpoint})
    assert done.returncode == 0, done.stderr
    (call,) = calls
    assert call["Action"] == "AssumeRole"
    assert call["RoleArn"] == args[args.index("--role-arn") + 1]
    assert call["ExternalId"] == args[args.index("--external-id") + 1]
    credential = json.loads(done.stdout)
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    token = decode(credential["status"]["token"])
    assert token["Action"] == "GetCallerIdentity"
    assert token["host"] == f"sts.{project.answers['aws_region']}.amazonaws.com", "presigned for the public endpoint"
    assert token["X-Amz-Credential"].startswith("ASIATEMPORARYKEY0001/"), "signed as the assumed role"
    assert token["X-Amz-Security-Token"] == "tempsessiontoken"
    assert "x-k8s-aws-id" in token["X-Amz-SignedHeaders"].split(";")


def test_plugin_uses_own_identity_when_role_is_blank(render):
    project = render({"cloud": "aws", "xcom": True})
    done = subprocess.run([sys.executable, *plugin_args(project)], capture_output=True, text=True, timeout=60,
                          env=BASE_ENV | {"KPO_EKS_ROLE_ARN": ""})
    assert done.returncode == 0, done.stderr
    token = decode(json.loads(done.stdout)["status"]["token"])
    assert token["host"] == f"sts.{project.answers['aws_region']}.amazonaws.com", "EKS needs the regional endpoint"
    assert token["X-Amz-Credential"].startswith("AKIAEXAMPLECALLER01/")


def test_plugin_failure_is_one_line(render):
    project = render({"cloud": "aws", "xcom": True})
    env = {k: v for k, v in BASE_ENV.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    done = subprocess.run([sys.executable, *plugin_args(project)], capture_output=True, text=True, timeout=60,
                          env=env | {"KPO_EKS_ROLE_ARN": "", "AWS_EC2_METADATA_DISABLED": "true"})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("eks_token: cannot make a token for") and done.stderr.count("\n") == 1
