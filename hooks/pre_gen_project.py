"""Refuse bad answers before cookiecutter writes a single project file.

Each field has one rule: a full-match pattern, what is allowed, and an example. Every bad
answer is named at once, one line ``ERROR: <field>: ...`` each on stderr, and exit code 1;
cookiecutter then deletes the project folder it created, so nothing is left on disk.

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


GUID = Rule(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "a GUID in lowercase hex (8-4-4-4-12)",
            "72f988bf-86f1-41af-91ab-2d7cd011db47")
DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"

RULES: dict[str, Rule] = {
    "project_name": Rule(r"[A-Za-z][A-Za-z0-9 _-]{0,39}",
                         "letters, digits, spaces, '-' and '_', starting with a letter, at most 40 characters", "GPU Training"),
    "project_slug": Rule(r"[a-z][a-z0-9_]{0,39}",
                         "lowercase letters, digits and '_', starting with a letter, at most 40 characters", "gpu_training"),
    "cloud": Rule(r"aws|gcp|azure|generic", "one of aws, gcp, azure, generic", "aws"),
    "namespace": Rule(rf"(?!kube-)(?!default\Z){DNS_LABEL}",
                      "a DNS-1123 label (lowercase letters, digits, '-', at most 63) that is not "
                      "'default' or 'kube-*': the pods get a namespace of their own", "airflow-jobs"),
    "kubernetes_conn_id": Rule(r"[a-z][a-z0-9_]{0,62}", "lowercase letters, digits and '_', starting with a letter "
                               "(it becomes AIRFLOW_CONN_<ID>)", "remote_kubernetes"),
    "xcom": Rule(r"True|False", "a yes/no answer", "yes"),
    "pod_operator": Rule(r"kubernetes|native", "one of kubernetes, native", "kubernetes"),
    "gpu_node_group": Rule(r"True|False", "a yes/no answer", "no"),
    "aws_account_id": Rule(r"[0-9]{12}", "exactly 12 digits", "123456789012"),
    "aws_region": Rule(r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}", "an AWS region code", "eu-west-1"),
    "aws_astro_workload_identity_arn": Rule(
        r"arn:aws(?:-cn|-us-gov)?:iam::[0-9]{12}:role/(?:[A-Za-z0-9+=,.@_-]+/)*[A-Za-z0-9+=,.@_-]{1,64}",
        "an IAM role ARN", "arn:aws:iam::111122223333:role/astro-my-deployment"),
    "gcp_project_id": Rule(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "6-30 lowercase letters, digits or '-', starting with a letter",
                           "my-gpu-project"),
    "gcp_location": Rule(r"[a-z]+-[a-z]+[0-9]{1,2}(?:-[a-z])?", "a GCP region or zone", "europe-west4 or europe-west4-a"),
    "gcp_service_account_email": Rule(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com",
        "a service-account email", "astro-my-deployment@my-project.iam.gserviceaccount.com"),
    "azure_subscription_id": GUID,
    "azure_resource_group": Rule(r"[A-Za-z0-9_-](?:[A-Za-z0-9._-]{0,88}[A-Za-z0-9_-])?",
                                 "1-90 letters, digits, '.', '_' or '-', not ending in '.'", "rg-gpu-prod"),
    "azure_tenant_id": GUID,
    "azure_identity_client_id": GUID,
    "azure_identity_object_id": GUID,
}  # in the order of the prompts, which is the order of the refusals

# The cluster name's rules differ per cloud; generic clusters only use it as a kubeconfig name.
CLUSTER_NAME: dict[str, Rule] = {
    "aws": Rule(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", "an EKS cluster name (letters, digits, '-', '_', at most 100)",
                "gpu-cluster"),
    "gcp": Rule(r"[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?", "a GKE cluster name (lowercase, digits, '-', at most 40)", "gpu-cluster"),
    "azure": Rule(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?",
                  "an AKS cluster name (letters, digits, '-', '_', at most 63)", "gpu-cluster"),
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


def fits(value: object, rule: Rule) -> bool:
    text = str(value) if isinstance(value, bool) else value
    return isinstance(text, str) and re.fullmatch(rule.pattern, text) is not None


def check_fields(answers: dict) -> dict[str, str]:
    """Every field against its own rule: {field: refusal line}."""
    found = {field: refusal(field, answers.get(field), rule)
             for field, rule in RULES.items() if not fits(answers.get(field), rule)}
    rule = CLUSTER_NAME.get(str(answers.get("cloud")))
    if rule and not fits(answers.get("cluster_name"), rule):
        found["cluster_name"] = refusal("cluster_name", answers.get("cluster_name"), rule)
    return found


def check_combinations(answers: dict, bad: set[str] = frozenset()) -> dict[str, str]:
    """Answers valid on their own that do not go together; fields in ``bad`` are not looked at again."""
    found: dict[str, str] = {}
    cloud, clouds = answers["cloud"], answers["_clouds"]
    region, arn = answers["aws_region"], answers["aws_astro_workload_identity_arn"]
    if cloud == "aws" and not {"aws_region", "aws_astro_workload_identity_arn"} & bad:
        partition = next((p for prefix, p in PARTITIONS.items() if region.startswith(prefix)), "aws")
        if arn.split(":")[1] != partition:
            found["aws_astro_workload_identity_arn"] = (
                f"ERROR: aws_astro_workload_identity_arn: region {region} is in partition "
                f"'{partition}' but the ARN is in '{arn.split(':')[1]}'; use an ARN like "
                f"arn:{partition}:iam::111122223333:role/astro-my-deployment"
            )
    if answers["pod_operator"] == "native" and not clouds[cloud]["native"]:
        supported = [name for name, c in clouds.items() if c["native"]]
        found["pod_operator"] = (f"ERROR: pod_operator: 'native' exists for {', '.join(supported)} only (the {cloud} "
                                 f"provider has no pod operator); allowed for {cloud}: kubernetes")
    if str(answers["gpu_node_group"]) == "True" and not clouds[cloud]["gpu_node_group"]:
        offered = [name for name, c in clouds.items() if c["gpu_node_group"]]
        found["gpu_node_group"] = (f"ERROR: gpu_node_group: the ephemeral GPU node group DAG exists for "
                                   f"{', '.join(offered)} only; allowed for {cloud}: no")
    ids = [answers[f] for f in ("azure_tenant_id", "azure_identity_client_id", "azure_identity_object_id") if f not in bad]
    if cloud == "azure" and len(set(ids)) < len(ids):
        found["azure_identity_object_id"] = (
            "ERROR: azure_identity_object_id: tenant id, client id and object (principal) id "
            "must differ; copy each from the managed identity's Overview page, e.g. "
            "object id 9f7c1a52-0c1e-4e4a-9d1a-3f1b2c3d4e5f"
        )
    return found


def check(answers: dict) -> dict[str, str]:
    """Every refusal at once, {field: line}, in the order the prompts ask."""
    found = check_fields(answers)
    if "cloud" not in found:
        found = check_combinations(answers, set(found)) | found  # a field's own rule speaks first
    order = [*RULES]
    order.insert(order.index("cloud") + 1, "cluster_name")
    return dict(sorted(found.items(), key=lambda item: order.index(item[0])))


def main(answers: dict) -> int:
    errors = check(answers)
    for line in errors.values():
        print(line, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r'''{{ cookiecutter | tojson }}''')))
