"""Kubeconfig exec plugin that prints an EKS bearer token as an ExecCredential.

It does what ``aws eks get-token --role-arn`` does, with the boto3 that the amazon provider
already puts in the image, so the image carries no AWS CLI (about 200 MB) and downloads
nothing. The token is a presigned STS GetCallerIdentity URL whose signed ``x-k8s-aws-id``
header names the cluster; EKS accepts it for 15 minutes, and the reported expiry (14
minutes) makes the Kubernetes client ask for a new one before that.

Credentials come from the default AWS chain: the Astro deployment's workload identity when
deployed, your own profile locally. With ``--role-arn`` (or ``KPO_EKS_ROLE_ARN``) it first
assumes that role; set ``KPO_EKS_ROLE_ARN=`` (empty) to use the caller's identity as it is.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import sys

TOKEN_PREFIX = "k8s-aws-v1."
PRESIGN_SECONDS = 60  # what the AWS CLI uses; EKS itself honours the token for 15 minutes
TOKEN_LIFETIME = dt.timedelta(minutes=14)
CLUSTER_ID_HEADER = "x-k8s-aws-id"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--role-arn", default="")
    parser.add_argument("--external-id", default="", help="the sts:ExternalId the role's trust policy requires")
    parser.add_argument("--session-name", default="airflow-remote-kpo")
    return parser.parse_args(argv)


def session_for(region: str, role_arn: str, session_name: str, external_id: str = ""):
    import boto3  # imported late so --help works without boto3

    session = boto3.Session(region_name=region)
    if not role_arn:
        return session
    # The regional STS endpoint (botocore also honours AWS_ENDPOINT_URL_STS).
    sts = session.client("sts", region_name=region)
    extra = {"ExternalId": external_id} if external_id else {}
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name, DurationSeconds=900, **extra)
    creds = creds["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )


def sts_url(region: str) -> str:
    """EKS accepts only tokens presigned for the public regional STS endpoint of its region."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sts.{region}.{suffix}/?Action=GetCallerIdentity&Version=2011-06-15"


def presigned_token(session, cluster_name: str, region: str) -> str:
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


def token_lifetime() -> dt.timedelta:
    """14 minutes (EKS honours 15). KPO_EKS_TOKEN_LIFETIME_SECONDS shortens it, e.g. to exercise refresh."""
    seconds = float(os.environ.get("KPO_EKS_TOKEN_LIFETIME_SECONDS") or TOKEN_LIFETIME.total_seconds())
    return min(dt.timedelta(seconds=seconds), TOKEN_LIFETIME)


def exec_credential(token: str, now: dt.datetime) -> dict:
    # The client announces the API version it wants in KUBERNETES_EXEC_INFO.
    info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}")
    api_version = info.get("apiVersion", "client.authentication.k8s.io/v1beta1")
    return {
        "kind": "ExecCredential",
        "apiVersion": api_version,
        "spec": {},
        "status": {
            "token": token,
            "expirationTimestamp": (now + token_lifetime()).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("AWS_STS_REGIONAL_ENDPOINTS", "regional")  # this short-lived process only
    role_arn = os.environ.get("KPO_EKS_ROLE_ARN", args.role_arn)
    try:
        session = session_for(args.region, role_arn, args.session_name, args.external_id)
        token = presigned_token(session, args.cluster_name, args.region)
    except Exception as err:  # noqa: BLE001 - the client shows this one line to the user
        print(f"eks_token: cannot make a token for {args.cluster_name}: {err}", file=sys.stderr)
        return 1
    now = dt.datetime.now(dt.UTC)
    print(json.dumps(exec_credential(token, now)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
