"""Authentication and authorization of the API double (see the package docstring)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlparse

EKS_PREFIX = "k8s-aws-v1."
EKS_TOKEN_MAX_AGE = 15 * 60  # what EKS accepts


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...]


class Unauthorized(Exception):
    pass


@dataclass
class AwsCredential:
    secret_key: str
    principal_arn: str  # arn:aws:iam::ACCT:user/x or arn:aws:sts::ACCT:assumed-role/ROLE/SESSION
    session_token: str | None = None
    expires: float | None = None  # epoch seconds: temporary credentials end (STS AssumeRole's Expiration)


@dataclass
class EksAuthenticator:
    """Verifies EKS tokens as EKS does with STS: the presigned GetCallerIdentity must carry a
    valid SigV4 signature (checked here against the known fake credentials, as STS would),
    for the cluster's region, with the cluster name in the signed x-k8s-aws-id header, made
    with credentials that have not expired: STS refuses a call signed with an expired session,
    so a token dies with the session that signed it, whatever its age (as
    kubernetes-sigs/aws-iam-authenticator#401 observed)."""

    cluster_name: str
    region: str
    credentials: dict[str, AwsCredential] = field(default_factory=dict)
    access_entries: dict[str, list[str]] = field(default_factory=dict)  # IAM role/user ARN -> groups
    max_age: float = EKS_TOKEN_MAX_AGE

    def authenticate(self, token: str) -> Identity:
        payload = token[len(EKS_PREFIX):]
        try:
            url = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        except ValueError:
            raise Unauthorized("malformed EKS token") from None
        parsed = urlparse(url)
        params = dict(parse_qsl(parsed.query, keep_blank_values=True))
        if parsed.scheme != "https" or parsed.netloc != f"sts.{self.region}.amazonaws.com":
            raise Unauthorized(f"token is not for the regional STS endpoint of {self.region}")
        if params.get("Action") != "GetCallerIdentity" or params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise Unauthorized("token is not a presigned GetCallerIdentity")
        signed_headers = params.get("X-Amz-SignedHeaders", "").split(";")
        if "x-k8s-aws-id" not in signed_headers:
            raise Unauthorized("x-k8s-aws-id is not signed")
        signed_at = dt.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        if time.time() - signed_at.timestamp() > self.max_age:
            raise Unauthorized("token expired")
        access_key, date, region, service, _ = params["X-Amz-Credential"].split("/")
        credential = self.credentials.get(access_key)
        if credential is None or (credential.session_token and params.get("X-Amz-Security-Token") != credential.session_token):
            raise Unauthorized("STS: the security token included in the request is invalid")
        if credential.expires is not None and time.time() >= credential.expires:
            raise Unauthorized("STS: the security token included in the request is expired")
        headers = {"host": parsed.netloc, "x-k8s-aws-id": self.cluster_name}
        expected = sigv4_query_signature(
            "GET", parsed.path or "/", params, headers, signed_headers, credential.secret_key, date, region, service
        )
        if not hmac.compare_digest(expected, params.get("X-Amz-Signature", "")):
            raise Unauthorized("STS: signature does not match (wrong key or another cluster name)")
        return self.identity_of(credential.principal_arn)

    def identity_of(self, principal_arn: str) -> Identity:
        # EKS maps an assumed-role session to its role's access entry.
        role_arn = principal_arn
        if ":assumed-role/" in principal_arn:
            account = principal_arn.split(":")[4]
            role = principal_arn.split(":assumed-role/")[1].split("/")[0]
            role_arn = f"arn:aws:iam::{account}:role/{role}"
        if role_arn not in self.access_entries:
            raise Unauthorized(f"no access entry for {role_arn}")
        return Identity(principal_arn, (*self.access_entries[role_arn], "system:authenticated"))


def sigv4_query_signature(method, path, params, headers, signed_headers, secret, date, region, service) -> str:
    def enc(value: str) -> str:
        return quote(value, safe="-_.~")

    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted((k, v) for k, v in params.items() if k != "X-Amz-Signature"))
    canonical_headers = "".join(f"{h}:{headers[h].strip()}\n" for h in signed_headers)
    # STS hashes the (empty) body of the GET it receives, as botocore does when presigning.
    canonical = "\n".join([method, path, query, canonical_headers, ";".join(signed_headers), hashlib.sha256(b"").hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass
class ServiceAccountTokens:
    """HMAC-signed JWTs standing in for the API server's bound ServiceAccount tokens."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def mint(self, namespace: str, name: str, ttl: float) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).decode().rstrip("=")

        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = b64(json.dumps({"sub": f"system:serviceaccount:{namespace}:{name}", "exp": int(time.time() + ttl),
                                 "iat": int(time.time())}).encode())
        signature = b64(hmac.new(self.key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
        return f"{header}.{claims}.{signature}"

    def authenticate(self, token: str) -> Identity:
        try:
            header, claims, signature = token.split(".")
            expected = base64.urlsafe_b64encode(hmac.new(self.key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(expected.decode().rstrip("="), signature):
                raise Unauthorized("bad ServiceAccount token signature")
            body = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        except ValueError:
            raise Unauthorized("malformed bearer token") from None
        if body["exp"] < time.time():
            raise Unauthorized("ServiceAccount token expired")
        namespace = body["sub"].split(":")[2]
        return Identity(body["sub"], ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))


class Rbac:
    """Kubernetes RBAC over one namespace's Roles and RoleBindings (no ClusterRoles needed)."""

    def __init__(self, roles: list[dict], bindings: list[dict]):
        self.roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in roles}
        self.bindings = bindings

    @staticmethod
    def _matches(subject: dict, identity: Identity, namespace: str) -> bool:
        kind = subject["kind"]
        if kind == "User":
            return subject["name"] == identity.username
        if kind == "Group":
            return subject["name"] in identity.groups
        if kind == "ServiceAccount":
            sa_namespace = subject.get("namespace", namespace)
            return identity.username == f"system:serviceaccount:{sa_namespace}:{subject['name']}"
        return False

    def allowed(self, identity: Identity, verb: str, resource: str, subresource: str, namespace: str,
                api_group: str = "", name: str = "") -> bool:
        """A rule with resourceNames allows only requests that name one of them (never create or list)."""
        full = f"{resource}/{subresource}" if subresource else resource
        for binding in self.bindings:
            if binding["metadata"]["namespace"] != namespace:
                continue
            if not any(self._matches(s, identity, namespace) for s in binding.get("subjects", [])):
                continue
            role = self.roles.get((namespace, binding["roleRef"]["name"]))
            if role is None or binding["roleRef"]["kind"] != "Role":
                continue
            for rule in role.get("rules", []):
                if (api_group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) and \
                        (full in rule.get("resources", []) or "*" in rule.get("resources", [])) and \
                        (verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])) and \
                        (not rule.get("resourceNames") or name in rule["resourceNames"]):
                    return True
        return False
