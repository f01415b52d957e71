"""A TEST DOUBLE of STS AssumeRole (and GetCallerIdentity) on 127.0.0.1 (plain HTTP), enforcing a rendered trust policy.

The caller is identified by the access key in its SigV4 Authorization header (the signature
itself is not re-checked here; the EKS token's signature is, in auth.py). AssumeRole succeeds
only for the role, principal and ExternalId the trust policy names; the temporary credentials
it hands out are registered with the EKS authenticator as that role's session. A session ends
DurationSeconds (900-3600, default 3600, as the role's default MaxSessionDuration allows) after
it was issued, as the Expiration it reports says: then GetCallerIdentity answers ExpiredToken
and EKS refuses tokens it signed. SIMULATED: ``session_seconds`` ends sessions sooner than AWS
ever does (its minimum is 900 s), standing for credentials that end before a token's 14
minutes without a test waiting 15 minutes.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

from .auth import AwsCredential, EksAuthenticator
from .local import LocalServer

DENIED = ("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{}</Message></Error>"
          "<RequestId>1</RequestId></ErrorResponse>")
ASSUMED = """<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>
<SessionToken>{token}</SessionToken><Expiration>{expiration}</Expiration></Credentials>
<AssumedRoleUser><Arn>{arn}</Arn><AssumedRoleId>AROADOUBLE:{session}</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"""

INVALID = ("<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error>"
           "<RequestId>1</RequestId></ErrorResponse>")
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
    def __init__(self, eks: EksAuthenticator, trust_policy: dict, role_arn: str, callers: dict[str, str],
                 session_seconds: float | None = None):
        """callers: access key id -> principal ARN of whoever holds it (e.g. the Astro identity)."""
        self.eks, self.role_arn, self.callers = eks, role_arn, callers
        self.session_seconds = session_seconds
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
        self.calls.append({"caller": access_key, "t": time.time(), **form})
        caller = self.callers.get(access_key)
        if form.get("Action") == "GetCallerIdentity":  # who holds this key: a caller or a session
            known = self.eks.credentials.get(access_key)
            arn = caller or (known.principal_arn if known else None)
            if arn is None:
                return 403, INVALID.format("InvalidClientTokenId", "The security token included in the request is invalid")
            if known and known.expires is not None and time.time() >= known.expires:
                return 403, INVALID.format("ExpiredToken", "The security token included in the request is expired")
            return 200, IDENTITY.format(arn=arn, account=arn.split(":")[4])
        if form.get("Action") != "AssumeRole" or form.get("RoleArn") != self.role_arn:
            return 403, DENIED.format("not the runner role")
        trusting = [external_id for principals, external_id in self.statements
                    if any(principal_matches(p, caller) for p in principals)]
        if not trusting:
            return 403, DENIED.format(f"{caller} is not trusted by {self.role_arn}")
        if not any(external_id is None or form.get("ExternalId") == external_id for external_id in trusting):
            return 403, DENIED.format("sts:ExternalId does not match the trust policy")
        duration = int(form.get("DurationSeconds") or 3600)
        if not 900 <= duration <= 3600:
            return 400, INVALID.format("ValidationError", f"DurationSeconds {duration} is outside 900-3600 "
                                       "(the role's MaxSessionDuration)")
        ends = time.time() + (self.session_seconds if self.session_seconds is not None else duration)
        key, secret, token = "ASIA" + secrets.token_hex(8).upper(), secrets.token_hex(20), secrets.token_hex(32)
        account, role = self.role_arn.split(":")[4], self.role_arn.split("/")[-1]
        session = form.get("RoleSessionName", "session")
        arn = f"arn:aws:sts::{account}:assumed-role/{role}/{session}"
        self.eks.credentials[key] = AwsCredential(secret, arn, session_token=token, expires=ends)
        expiration = dt.datetime.fromtimestamp(ends, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, ASSUMED.format(key=key, secret=secret, token=token, arn=arn, session=session, expiration=expiration)

    @property
    def assume_role_calls(self) -> list[dict]:
        return [call for call in self.calls if call.get("Action") == "AssumeRole"]
