"""Refuse bad answers before cookiecutter writes a single project file.

Each field has one rule: a full-match pattern, what is allowed, and an example. A refusal is
one line ``ERROR: <field>: ...`` on stderr and exit code 1; cookiecutter then deletes the
project folder it created, so nothing is left on disk.

The answers arrive as JSON data (``tojson`` escapes quotes), never as Python source.
"""

from __future__ import annotations

import json
import re
import sys
from typing import NamedTuple


class Rule(NamedTuple):
    pattern: str
    allowed: str
    example: str


GUID = Rule(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "a GUID in lowercase hex (8-4-4-4-12)",
    "72f988bf-86f1-41af-91ab-2d7cd011db47",
)
DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"

RULES: dict[str, Rule] = {
    "project_name": Rule(
        r"[A-Za-z][A-Za-z0-9 _-]{0,39}",
        "letters, digits, spaces, '-' and '_', starting with a letter, at most 40 characters",
        "GPU Training",
    ),
    "project_slug": Rule(
        r"[a-z][a-z0-9_]{0,39}",
        "lowercase letters, digits and '_', starting with a letter, at most 40 characters",
        "gpu_training",
    ),
    "cloud": Rule(r"aws|gcp|azure|generic", "one of aws, gcp, azure, generic", "aws"),
    "namespace": Rule(
        rf"(?!kube-)(?!default\Z){DNS_LABEL}",
        "a DNS-1123 label (lowercase letters, digits, '-', at most 63) that is not "
        "'default' or 'kube-*': the pods get a namespace of their own",
        "airflow-jobs",
    ),
    "kubernetes_conn_id": Rule(
        r"[a-z][a-z0-9_]{0,62}",
        "lowercase letters, digits and '_', starting with a letter (it becomes AIRFLOW_CONN_<ID>)",
        "remote_kubernetes",
    ),
    "xcom": Rule(r"True|False", "a yes/no answer", "yes"),
    "pod_operator": Rule(r"kubernetes|native", "one of kubernetes, native", "kubernetes"),
    "gpu_node_group": Rule(r"True|False", "a yes/no answer", "no"),
    "aws_account_id": Rule(r"[0-9]{12}", "exactly 12 digits", "123456789012"),
    "aws_region": Rule(
        r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}",
        "an AWS region code", "eu-west-1",
    ),
    "aws_astro_workload_identity_arn": Rule(
        r"arn:aws(?:-cn|-us-gov)?:iam::[0-9]{12}:role/(?:[A-Za-z0-9+=,.@_-]+/)*[A-Za-z0-9+=,.@_-]{1,64}",
        "an IAM role ARN", "arn:aws:iam::111122223333:role/astro-my-deployment",
    ),
    "gcp_project_id": Rule(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
        "6-30 lowercase letters, digits or '-', starting with a letter", "my-gpu-project",
    ),
    "gcp_location": Rule(
        r"[a-z]+-[a-z]+[0-9]{1,2}(?:-[a-z])?",
        "a GCP region or zone", "europe-west4 or europe-west4-a",
    ),
    "gcp_service_account_email": Rule(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com",
        "a service-account email", "astro-my-deployment@my-project.iam.gserviceaccount.com",
    ),
    "azure_subscription_id": GUID,
    "azure_tenant_id": GUID,
    "azure_identity_client_id": GUID,
    "azure_identity_object_id": GUID,
    "azure_resource_group": Rule(
        r"[A-Za-z0-9_-](?:[A-Za-z0-9._-]{0,88}[A-Za-z0-9_-])?",
        "1-90 letters, digits, '.', '_' or '-', not ending in '.'", "rg-gpu-prod",
    ),
}

# The cluster name's rules differ per cloud; generic clusters only use it as a kubeconfig name.
CLUSTER_NAME: dict[str, Rule] = {
    "aws": Rule(
        r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", "an EKS cluster name (letters, digits, '-', '_', at most 100)", "gpu-cluster"
    ),
    "gcp": Rule(r"[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?", "a GKE cluster name (lowercase, digits, '-', at most 40)", "gpu-cluster"),
    "azure": Rule(
        r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?",
        "an AKS cluster name (letters, digits, '-', '_', at most 63)",
        "gpu-cluster",
    ),
    "generic": Rule(DNS_LABEL, "a DNS-1123 label", "gpu-cluster"),
}

# The workload identity's partition must be the region's, or STS refuses the role.
PARTITIONS = {"cn-": "aws-cn", "us-gov-": "aws-us-gov"}


def shown(value: object) -> str:
    """The refused value, printable on one line and cut short."""
    text = ascii(value)
    return text if len(text) <= 50 else text[:47] + "..."


def refusal(field: str, value: object, rule: Rule) -> str:
    return f"ERROR: {field}: {shown(value)} is not allowed; use {rule.allowed}, e.g. {rule.example}"


def check_fields(answers: dict) -> str | None:
    for field, rule in RULES.items():
        value = answers.get(field)
        text = str(value) if isinstance(value, bool) else value
        if not isinstance(text, str) or not re.fullmatch(rule.pattern, text):
            return refusal(field, value, rule)
    cloud = answers["cloud"]
    if not re.fullmatch(CLUSTER_NAME[cloud].pattern, answers["cluster_name"]):
        return refusal("cluster_name", answers["cluster_name"], CLUSTER_NAME[cloud])
    return None


def check_combinations(answers: dict) -> str | None:
    cloud = answers["cloud"]
    if cloud == "aws":
        region, arn = answers["aws_region"], answers["aws_astro_workload_identity_arn"]
        partition = next((p for prefix, p in PARTITIONS.items() if region.startswith(prefix)), "aws")
        if arn.split(":")[1] != partition:
            return (
                f"ERROR: aws_astro_workload_identity_arn: region {region} is in partition "
                f"'{partition}' but the ARN is in '{arn.split(':')[1]}'; use an ARN like "
                f"arn:{partition}:iam::111122223333:role/astro-my-deployment"
            )
    supported = [name for name, c in answers["_clouds"].items() if c["native"]]
    if answers["pod_operator"] == "native" and not answers["_clouds"][cloud]["native"]:
        return (f"ERROR: pod_operator: 'native' exists for {', '.join(supported)} only (the {cloud} "
                f"provider has no pod operator); allowed for {cloud}: kubernetes")
    if str(answers["gpu_node_group"]) == "True" and not answers["_clouds"][cloud]["gpu_node_group"]:
        offered = [name for name, c in answers["_clouds"].items() if c["gpu_node_group"]]
        return (f"ERROR: gpu_node_group: the ephemeral GPU node group DAG exists for {', '.join(offered)} "
                f"only; allowed for {cloud}: no")
    if cloud == "azure":
        ids = {f: answers[f] for f in ("azure_tenant_id", "azure_identity_client_id", "azure_identity_object_id")}
        if len(set(ids.values())) < len(ids):
            return (
                "ERROR: azure_identity_object_id: tenant id, client id and object (principal) id "
                "must differ; copy each from the managed identity's Overview page, e.g. "
                "object id 9f7c1a52-0c1e-4e4a-9d1a-3f1b2c3d4e5f"
            )
    return None


def main(answers: dict) -> int:
    error = check_fields(answers) or check_combinations(answers)
    if error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r'''{{ cookiecutter | tojson }}''')))
