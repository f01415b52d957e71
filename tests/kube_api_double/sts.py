"""A TEST DOUBLE of STS AssumeRole (and GetCallerIdentity) on 127.0.0.1 (plain HTTP), enforcing a rendered trust policy.

The caller is identified by the access key in its SigV4 Authorization header (the signature
itself is not re-checked here; the EKS token's signature is, in auth.py). AssumeRole succeeds
only for the role, principal and ExternalId the trust policy names; the temporary credentials
it hands out are registered with the EKS authenticator as that role's session.
"""

from __future__ import annotations

import re
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

from .auth import AwsCredential, EksAuthenticator
from .local import LocalServer

DENIED = ("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{}</Message></Error>"
          "<RequestId>1</RequestId></ErrorResponse>")
ASSUMED = """<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
<SessionToken>{token}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>{arn}</Arn><AssumedRoleId>AROADOUBLE:{session}</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"""

IDENTITY = """<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>
<Arn>{arn}</Arn><UserId>AROADOUBLE:session</UserId><Account>{account}</Account></GetCallerIdentityResult>
<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"""


def principal_matches(principal: str, caller: str | None) -> bool:
    """As IAM reads a trust policy: the principal itself, or (for a role ARN, path included) any
    session of that role, arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION."""
    if caller is None:
        return False
    if caller == principal:
        return True
    if ":assumed-role/" in caller and ":role/" in principal:
        account, role = caller.split(":")[4], caller.split(":assumed-role/")[1].split("/")[0]
        return principal.split(":")[4] == account and principal.rsplit("/", 1)[1] == role
    return False


class StsDouble(LocalServer):
    def __init__(self, eks: EksAuthenticator, trust_policy: dict, role_arn: str, callers: dict[str, str]):
        """callers: access key id -> principal ARN of whoever holds it (e.g. the Astro identity)."""
        self.eks, self.role_arn, self.callers = eks, role_arn, callers
        # Each Allow statement: (trusted principal ARNs, the ExternalId it requires or None).
        self.statements = [
            ([p] if isinstance(p := statement["Principal"]["AWS"], str) else list(p),
             statement.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId"))
            for statement in trust_policy["Statement"] if statement["Effect"] == "Allow"]
        self.calls: list[dict] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                key = re.search(r"Credential=([A-Z0-9]+)/", self.headers.get("Authorization", ""))
                code, body = double.assume(key.group(1) if key else "", form)
                payload = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def assume(self, access_key: str, form: dict) -> tuple[int, str]:
        self.calls.append({"caller": access_key, **form})
        caller = self.callers.get(access_key)
        if form.get("Action") == "GetCallerIdentity":  # who holds this key: a caller or a session
            known = self.eks.credentials.get(access_key)
            arn = caller or (known.principal_arn if known else None)
            if arn is None:
                return 403, DENIED.format("The security token included in the request is invalid")
            return 200, IDENTITY.format(arn=arn, account=arn.split(":")[4])
        if form.get("Action") != "AssumeRole" or form.get("RoleArn") != self.role_arn:
            return 403, DENIED.format("not the runner role")
        trusting = [external_id for principals, external_id in self.statements
                    if any(principal_matches(p, caller) for p in principals)]
        if not trusting:
            return 403, DENIED.format(f"{caller} is not trusted by {self.role_arn}")
        if not any(external_id is None or form.get("ExternalId") == external_id for external_id in trusting):
            return 403, DENIED.format("sts:ExternalId does not match the trust policy")
        key, secret, token = "ASIA" + secrets.token_hex(8).upper(), secrets.token_hex(20), secrets.token_hex(32)
        account, role = self.role_arn.split(":")[4], self.role_arn.split("/")[-1]
        session = form.get("RoleSessionName", "session")
        arn = f"arn:aws:sts::{account}:assumed-role/{role}/{session}"
        self.eks.credentials[key] = AwsCredential(secret, arn, session_token=token)
        return 200, ASSUMED.format(key=key, secret=secret, token=token, arn=arn, session=session)
