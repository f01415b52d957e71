"""A TEST DOUBLE of Google's OAuth2 token endpoint (oauth2.googleapis.com/token), on 127.0.0.1.

SIMULATED: the service-account half of Google sign-in, nothing else. It holds registered
service accounts (email -> RSA public key) and answers the JWT-bearer grant that a
service-account key JSON leads its owner to post to the key's ``token_uri``: the assertion
must be an RS256 JWT signed by the registered key of its ``iss``, with ``aud`` = this token
URL and a sane ``iat``/``exp`` (at most one hour apart, not expired, not from the future).
Anything else is refused as Google does: 400 with an OAuth error JSON (``invalid_grant``).
It issues opaque ``ya29.`` access tokens with a configurable lifetime (``expires_in``) and
remembers each one (email, issued, expiry), so the Kubernetes API double can accept them the
way GKE does (as the service account's email). Scopes, IAM, the metadata server, user
credentials and workload identity federation are not simulated.

It serves HTTPS with its own CA (``ca_file``): a client trusts it through ``SSL_CERT_FILE``,
so TLS verification stays on. Every call is recorded in ``calls``.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .auth import Identity, Unauthorized
from .local import LocalServer, TlsHTTPServer
from .tls import make_ca_and_server_cert

GOOGLE_TOKEN_PREFIX = "ya29."
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOCK_SKEW = 60  # seconds of clock difference tolerated on iat
MAX_ASSERTION_LIFETIME = 3600  # Google refuses assertions valid for longer


@dataclass(frozen=True)
class IssuedToken:
    email: str
    issued: float
    expiry: float


class Refused(Exception):
    """An OAuth error: (error, error_description)."""


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class GoogleTokenDouble(LocalServer):
    def __init__(self, token_lifetime: float = 3600):
        self.token_lifetime = token_lifetime  # expires_in of the access tokens issued from now on
        self.accounts: dict[str, rsa.RSAPublicKey] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="google-token-double-")
        folder = Path(self._tmp.name)
        ca_data, cert, key = make_ca_and_server_cert(folder)
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(base64.b64decode(ca_data))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                form = dict(parse_qsl(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()))
                code, payload = double.exchange(self.path, form)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = TlsHTTPServer(("127.0.0.1", 0), Handler, context)
        self.url = f"https://127.0.0.1:{self.httpd.server_port}/token"

    def stop(self) -> None:
        super().stop()
        self._tmp.cleanup()

    # -- service accounts --------------------------------------------------------------------
    def register(self, email: str, public_key: rsa.RSAPublicKey) -> None:
        self.accounts[email] = public_key

    def write_key_file(self, email: str, path: Path, project_id: str) -> Path:
        """Make an RSA key for ``email``, register its public half, write the key JSON Google would hand out."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.register(email, key.public_key())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        path.write_text(json.dumps({
            "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
            "private_key": pem.decode(), "client_email": email, "client_id": str(secrets.randbelow(10**21)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.url,
        }))
        path.chmod(0o600)
        return path

    # -- the token endpoint ------------------------------------------------------------------
    def exchange(self, path: str, form: dict) -> tuple[int, dict]:
        try:
            if path.split("?")[0] != "/token":
                raise Refused("invalid_request", f"no such endpoint: {path}")
            if form.get("grant_type") != JWT_BEARER:
                raise Refused("unsupported_grant_type", f"grant_type {form.get('grant_type')!r} is not the JWT bearer grant")
            email = self.verify_assertion(form.get("assertion", ""))
        except Refused as refusal:
            error, description = refusal.args
            with self.lock:
                self.calls.append({"grant_type": form.get("grant_type"), "status": 400, "error": error,
                                   "reason": description})
            return 400, {"error": error, "error_description": description}
        now = time.time()
        token = GOOGLE_TOKEN_PREFIX + secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[token] = IssuedToken(email, now, now + self.token_lifetime)
            self.calls.append({"grant_type": JWT_BEARER, "status": 200, "email": email, "expires_in": self.token_lifetime})
        return 200, {"access_token": token, "expires_in": int(self.token_lifetime), "token_type": "Bearer"}

    def verify_assertion(self, assertion: str) -> str:
        """The service account's email if the JWT is signed by its registered key and fresh."""
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header, claims = json.loads(_b64decode(header_b64)), json.loads(_b64decode(claims_b64))
            signature = _b64decode(signature_b64)
        except ValueError:
            raise Refused("invalid_grant", "malformed JWT assertion") from None
        if header.get("alg") != "RS256":
            raise Refused("invalid_grant", f"JWT alg {header.get('alg')!r} is not RS256")
        email = claims.get("iss")
        key = self.accounts.get(email)
        if key is None:
            raise Refused("invalid_grant", f"Invalid grant: account not found ({email})")
        try:
            key.verify(signature, f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise Refused("invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("aud") != self.url:
            raise Refused("invalid_grant", f"Invalid JWT: aud {claims.get('aud')!r} is not {self.url}")
        now, iat, exp = time.time(), claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise Refused("invalid_grant", "Invalid JWT: iat and exp must be integers")
        if iat > now + CLOCK_SKEW or exp <= now or exp - iat > MAX_ASSERTION_LIFETIME:
            raise Refused("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                           "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        return email

    # -- what the Kubernetes API double asks -------------------------------------------------
    def authenticate(self, token: str) -> tuple[Identity, float]:
        """(the service account's identity as GKE names it, when the token was issued)."""
        with self.lock:
            issued = self.tokens.get(token)
        if issued is None:
            raise Unauthorized("not an access token the Google token double issued")
        if issued.expiry <= time.time():
            raise Unauthorized("Google access token expired")
        return Identity(issued.email, ("system:authenticated",)), issued.issued
