"""Kubeconfig exec plugin that prints an EKS bearer token as an ExecCredential.

It does what ``aws eks get-token --role-arn`` does, with the boto3 that the amazon provider
already puts in the image, so the image carries no AWS CLI (about 200 MB) and downloads
nothing. The token is a presigned STS GetCallerIdentity URL whose signed ``x-k8s-aws-id``
header names the cluster; EKS accepts it for 15 minutes, and the reported expiry (14
minutes) makes the Kubernetes client ask for a new one before that.

Credentials come from the default AWS chain: the Astro deployment's workload identity when
deployed, your own profile locally. With ``--role-arn`` (or ``KPO_EKS_ROLE_ARN``) it first
assumes that role; set ``KPO_EKS_ROLE_ARN=`` (empty) to use the caller's identity as it is.

Token cache. The triggerer runs this plugin for every API call of a deferred task, and a run
that makes a token spends about 0.3 s in boto3 plus the AssumeRole round trip. So, as
kubelogin and gke-gcloud-auth-plugin do, the token is kept in
``~/.kube/cache/kpo-eks/<sha256>.json`` (folder 0700, file 0600, written atomically), one file
per cluster, region, role, ExternalId, session name, lifetime and caller (the AWS_* variables
that choose the credentials, and the contents of the AWS config and credentials files), and
served until a minute before its expiry without importing boto3. That expiry is the earlier
of 14 minutes after signing and the end of the credentials that signed it (EKS refuses the
token once they expire). A file that is not a regular file of this user with mode 0600, or
that does not parse, is never trusted: a new token replaces it. Runs that miss at the same
time wait for one another, so one AssumeRole serves them all. ``KPO_EKS_TOKEN_CACHE=off``
turns the cache off; deleting the folder clears it.

A token the cluster rejects. The plugin never sees the 401 the client got, so a cached token
is served for at most ``KPO_EKS_TOKEN_RECHECK_SECONDS`` (60) after it was made or last
checked. The first run after that sends it once to the API server (``GET /version``; the
server and CA come from KUBERNETES_EXEC_INFO with ``provideClusterInfo``, or from the
KPO_EKS_CLUSTER_SERVER / KPO_EKS_CLUSTER_CA_DATA variables the connection's kubeconfig sets):
on 401 it drops the token and makes a new one, otherwise serves it for another 60 s. The cost:
one extra authenticated request per token per minute while healthy, and a rejected token
keeps being handed out for at most 60 s, so each API call in that window can get a 401 (a
deferred task's trigger fails its try at the first; the retry, a minute later, gets a new
token). A check that gets no answer (5 s timeout) serves the token unchecked and leaves the
check due. Without a server to ask, a cached token is served for 60 s only: one AssumeRole a
minute instead of one per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time

# A cached run imports only the modules above (and argparse only for --help or a mistake):
# Python's own start-up is most of its time.
TOKEN_PREFIX = "k8s-aws-v1."
PRESIGN_SECONDS = 60  # what the AWS CLI uses; EKS itself honours the token for 15 minutes
TOKEN_LIFETIME_SECONDS = 14 * 60
CLUSTER_ID_HEADER = "x-k8s-aws-id"
CACHE_MARGIN_SECONDS = 60  # a cached token is served until this long before its expiry
RECHECK_SECONDS = 60.0
CHECK_TIMEOUT_SECONDS = 5.0
CACHE_VERSION = 1
# The variables that choose whose credentials sign (botocore's credential chain and endpoints).
IDENTITY_ENV = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
)
OPTIONS = {"--cluster-name": "cluster_name", "--region": "region", "--role-arn": "role_arn",
           "--external-id": "external_id", "--session-name": "session_name"}


class Args:
    def __init__(self, cluster_name: str, region: str, role_arn: str = "", external_id: str = "",
                 session_name: str = "airflow-remote-kpo"):
        self.cluster_name, self.region, self.role_arn = cluster_name, region, role_arn
        self.external_id, self.session_name = external_id, session_name


def parse_args(argv: list[str] | None = None) -> Args:
    argv = sys.argv[1:] if argv is None else argv
    pairs = dict(zip(argv[::2], argv[1::2], strict=False))
    if len(argv) % 2 == 0 and len(pairs) * 2 == len(argv) and set(pairs) <= set(OPTIONS) \
            and {"--cluster-name", "--region"} <= set(pairs):
        return Args(**{OPTIONS[option]: value for option, value in pairs.items()})
    import argparse  # --help, --option=value or a mistake: argparse's own help and messages

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--role-arn", default="")
    parser.add_argument("--external-id", default="", help="the sts:ExternalId the role's trust policy requires")
    parser.add_argument("--session-name", default="airflow-remote-kpo")
    return Args(**vars(parser.parse_args(argv)))


def session_for(region: str, role_arn: str, session_name: str, external_id: str = ""):
    """A boto3 session signing as the role (or as the caller), and when its credentials end
    (epoch seconds, None if they do not)."""
    import boto3  # imported late so --help and cached tokens work without boto3

    session = boto3.Session(region_name=region)
    if not role_arn:
        credentials = session.get_credentials()
        ends = getattr(credentials, "_expiry_time", None)  # botocore's refreshable credentials
        return session, ends.timestamp() if ends else None
    # The regional STS endpoint (botocore also honours AWS_ENDPOINT_URL_STS).
    sts = session.client("sts", region_name=region)
    extra = {"ExternalId": external_id} if external_id else {}
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name, DurationSeconds=900, **extra)
    creds = creds["Credentials"]
    assumed = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )
    return assumed, creds["Expiration"].timestamp()


def sts_url(region: str) -> str:
    """EKS accepts only tokens presigned for the public regional STS endpoint of its region."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sts.{region}.{suffix}/?Action=GetCallerIdentity&Version=2011-06-15"


def presigned_token(session, cluster_name: str, region: str) -> str:
    import base64

    from botocore.signers import RequestSigner

    credentials = session.get_credentials()
    if credentials is None:
        raise RuntimeError("no AWS credentials found (workload identity, profile or env)")
    signer = RequestSigner(
        service_id=session.client("sts", region_name=region).meta.service_model.service_id,
        region_name=region,
        signing_name="sts",
        signature_version="v4",
        credentials=credentials,
        event_emitter=session.events,
    )
    url = signer.generate_presigned_url(
        {
            "method": "GET",
            "url": sts_url(region),
            "body": {},
            "headers": {CLUSTER_ID_HEADER: cluster_name},
            "context": {},
        },
        region_name=region,
        expires_in=PRESIGN_SECONDS,
        operation_name="",
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def token_lifetime() -> float:
    """14 minutes (EKS honours 15). KPO_EKS_TOKEN_LIFETIME_SECONDS shortens it, e.g. to exercise
    refresh; at 60 s or less no token is served from the cache."""
    return min(float(os.environ.get("KPO_EKS_TOKEN_LIFETIME_SECONDS") or TOKEN_LIFETIME_SECONDS), TOKEN_LIFETIME_SECONDS)


def exec_info() -> dict:
    # The client announces the API version it wants (and, with provideClusterInfo, the
    # cluster) in KUBERNETES_EXEC_INFO.
    return json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}")


def exec_credential(token: str, expires: float) -> dict:
    return {
        "kind": "ExecCredential",
        "apiVersion": exec_info().get("apiVersion", "client.authentication.k8s.io/v1beta1"),
        "spec": {},
        "status": {
            "token": token,
            "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        },
    }


# -- the cache --------------------------------------------------------------------------------
def cache_dir() -> str | None:
    """~/.kube/cache/kpo-eks, a folder of this user's with mode 0700; None: no cache."""
    if os.environ.get("KPO_EKS_TOKEN_CACHE", "").lower() in ("off", "0", "false", "no"):
        return None
    home = os.path.expanduser("~")
    if home.startswith("~"):  # no home at all
        return None
    folder = os.path.join(home, ".kube", "cache", "kpo-eks")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return None
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(folder, 0o700)
    except OSError:  # a read-only home: run without a cache
        return None
    return folder


def cache_key(args: Args, role_arn: str) -> str:
    files = []
    for variable, default in (("AWS_CONFIG_FILE", "~/.aws/config"), ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")):
        try:
            with open(os.path.expanduser(os.environ.get(variable) or default), "rb") as file:
                files.append(hashlib.sha256(file.read()).hexdigest())
        except OSError:
            files.append(None)
    parts = {"v": CACHE_VERSION, "cluster": args.cluster_name, "region": args.region, "role": role_arn,
             "external_id": args.external_id, "session": args.session_name, "uid": os.getuid(),
             "lifetime": token_lifetime(), "env": {name: os.environ.get(name) for name in IDENTITY_ENV},
             "files": files}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_entry(path: str, key: str) -> dict | None:
    """The cached entry, or None unless it is a well-formed regular file of this user, 0600."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) != 0o600:
            return None
        try:
            entry = json.load(file)
        except (ValueError, UnicodeDecodeError, OSError):
            return None
    numbers = ("expires", "made", "checked")
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("token"), str) \
            or not entry["token"].startswith(TOKEN_PREFIX) \
            or not all(isinstance(entry.get(n), (int, float)) and not isinstance(entry.get(n), bool) for n in numbers):
        return None
    return entry


def write_entry(path: str, entry: dict) -> None:
    import tempfile  # only when writing: a cached run stays lean

    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")  # created 0600
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(entry, file)
        os.replace(temporary, path)
    except BaseException:
        remove(temporary)
        raise


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Locked:
    """Runs that make a token for the same entry take turns (one AssumeRole serves them all)."""

    def __init__(self, path: str):
        self.path, self.fd = path[: -len(".json")] + ".lock", None

    def __enter__(self):
        import fcntl

        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:  # not lockable: go on without taking turns
            return self
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


def recheck_seconds() -> float:
    return float(os.environ.get("KPO_EKS_TOKEN_RECHECK_SECONDS") or RECHECK_SECONDS)


def cluster_to_check() -> dict:
    """The API server to check a cached token with: from provideClusterInfo, else from the
    variables the connection's kubeconfig sets (kubernetes_asyncio passes no cluster info)."""
    cluster = (exec_info().get("spec") or {}).get("cluster") or {}
    if cluster.get("server"):
        return cluster
    server = os.environ.get("KPO_EKS_CLUSTER_SERVER", "")
    return {"server": server, "certificate-authority-data": os.environ.get("KPO_EKS_CLUSTER_CA_DATA", "")} if server else {}


def cluster_verdict(token: str, cluster: dict) -> str:
    """'rejected' (401), 'accepted' (any other answer of the API server) or 'unknown'."""
    import base64
    import http.client
    import ssl
    from urllib.parse import urlsplit

    url = urlsplit(cluster["server"])
    if url.scheme != "https" or not url.hostname:
        return "unknown"
    try:
        if cluster.get("certificate-authority-data"):
            context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        else:
            context = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        if cluster.get("insecure-skip-tls-verify"):
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(url.hostname, url.port or 443, context=context,
                                                 timeout=CHECK_TIMEOUT_SECONDS)
        try:
            connection.request("GET", url.path.rstrip("/") + "/version",
                               headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            status = connection.getresponse().status
        finally:
            connection.close()
    except (OSError, ValueError, http.client.HTTPException):
        return "unknown"
    if status == 401:
        return "rejected"
    # 2xx/403/404 come after authentication; a 429 or 5xx may come from anything in between.
    return "accepted" if status < 500 and status != 429 else "unknown"


def from_cache(path: str, key: str, skip_token: str | None = None) -> tuple[dict | None, str | None]:
    """(entry to serve or None, token the cluster rejected or None)."""
    entry = read_entry(path, key)
    now = time.time()
    if entry is None or now >= entry["expires"] - CACHE_MARGIN_SECONDS or entry["token"] == skip_token:
        return None, None
    if now - entry["checked"] < recheck_seconds():
        return entry, None
    cluster = cluster_to_check()
    if not cluster:
        return None, None
    verdict = cluster_verdict(entry["token"], cluster)
    if verdict == "rejected":
        remove(path)
        return None, entry["token"]
    if verdict == "accepted":
        try:
            write_entry(path, {**entry, "checked": now})
        except OSError:
            pass
    return entry, None


def make_token(args: Args, role_arn: str) -> tuple[str, float]:
    now = time.time()
    session, credentials_end = session_for(args.region, role_arn, args.session_name, args.external_id)
    token = presigned_token(session, args.cluster_name, args.region)
    expires = now + token_lifetime()
    if credentials_end is not None:
        expires = min(expires, credentials_end)
    return token, int(expires)


def cached_or_new(args: Args, role_arn: str) -> tuple[str, float]:
    folder = cache_dir()
    if folder is None:
        return make_token(args, role_arn)
    key = cache_key(args, role_arn)
    path = os.path.join(folder, f"{key}.json")
    entry, rejected = from_cache(path, key)
    if entry is None:
        with Locked(path):
            entry, _ = from_cache(path, key, skip_token=rejected)  # another run may have made one meanwhile
            if entry is None:
                token, expires = make_token(args, role_arn)
                now = time.time()
                try:
                    write_entry(path, {"key": key, "token": token, "expires": expires, "made": now, "checked": now})
                except OSError:  # a full or read-only disk costs the cache, not the token
                    pass
                return token, expires
    return entry["token"], entry["expires"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("AWS_STS_REGIONAL_ENDPOINTS", "regional")  # this short-lived process only
    role_arn = os.environ.get("KPO_EKS_ROLE_ARN", args.role_arn)
    try:
        token, expires = cached_or_new(args, role_arn)
    except Exception as err:  # noqa: BLE001 - the client shows this one line to the user
        print(f"eks_token: cannot make a token for {args.cluster_name}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(exec_credential(token, expires)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
