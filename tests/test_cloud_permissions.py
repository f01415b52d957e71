"""Cloud IAM, checked against each cloud's own permission table (tests/permission_tables/).

What the rendered code calls (GKE and AWS API methods found in its Python, aws/gcloud/az
commands found in its setup scripts) is mapped to the cloud's permissions by small written
maps here; the permissions themselves come only from the tables, each with its source. Then:
every permission a rendered role or policy grants exists in the table, covers the calls, and
is needed by one of them; every command the setup scripts run maps to real permissions.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import CUSTOM, choices

TABLES = Path(__file__).parent / "permission_tables"
GKE = json.loads((TABLES / "gke_api_permissions.json").read_text())
AWS = json.loads((TABLES / "aws_service_authorization.json").read_text())
AZURE = json.loads((TABLES / "azure_resource_provider_operations.json").read_text())

# Users' own answers, every operator and the GPU DAG on and off: choice lists from cookiecutter.json.
CASES = [
    pytest.param({"cloud": cloud, "xcom": False, "pod_operator": operator, "gpu_node_group": gpu, **CUSTOM},
                 id=f"{cloud}-{operator}{'-gpu' if gpu else ''}")
    for cloud in ("aws", "gcp")
    for operator in choices("pod_operator")
    for gpu in choices("gpu_node_group")
]
assert {"aws", "gcp", "azure"} <= set(choices("cloud"))


def python_sources(root: Path) -> dict[str, ast.Module]:
    """The rendered DAGs and include/ code, parsed."""
    files = sorted((root / "dags").rglob("*.py")) + sorted((root / "include").rglob("*.py"))
    return {str(f.relative_to(root)): ast.parse(f.read_text()) for f in files}


def called_attributes(tree: ast.Module) -> set[str]:
    """Names of every ``x.name(...)`` call."""
    return {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


def imported_from(tree: ast.Module, package: str) -> set[str]:
    """Names imported from ``package`` (and its submodules) that the module uses."""
    names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             and (n.module or "").startswith(package) for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return names & used


# --- commands in the setup scripts ------------------------------------------------------------

# A command runs where setup_remote.sh's helpers take it (query, probe, change), as an array
# (assume=(aws sts ...)), or through has_binding ROLE MEMBER <gcloud words>. Commands quoted in
# messages ("..., then run aws eks update-cluster-config ...") are advice, not runs.
SHELL_COMMAND = re.compile(
    r"(?:\b(?:query|probe|change)\s+(?:env\s+\S+=\S+\s+)*|=\()(aws|gcloud|az)((?:\s+[a-z][a-z0-9-]*)+)"
)
HAS_BINDING = re.compile(r"\bhas_binding\s+\S+\s+\S+((?:\s+[a-z][a-z0-9-]*)+)")


def shell_commands(script: Path) -> set[tuple[str, ...]]:
    text = re.sub(r"\\\n\s*", " ", script.read_text())
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    found = {(tool, *words.split()) for tool, words in SHELL_COMMAND.findall(text)}
    found |= {("gcloud", *words.split()) for words in HAS_BINDING.findall(text)}
    return found


def python_commands(path: Path) -> set[tuple[str, ...]]:
    """["aws", "eks", "describe-cluster", "--name", ...] lists in scripts/write_connection.py."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant) \
                and node.elts[0].value in ("aws", "gcloud", "az"):
            words = []
            for elt in node.elts:
                if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str)) or elt.value.startswith("-"):
                    break
                words.append(elt.value)
            found.add(tuple(words))
    return found


def setup_commands(root: Path, cloud: str) -> set[tuple[str, ...]]:
    commands = shell_commands(root / "scripts" / "setup" / f"{cloud}.sh") | shell_commands(
        root / "scripts" / "setup_remote.sh")
    return commands | python_commands(root / "scripts" / "write_connection.py")


def test_command_finder_sees_commands_and_skips_advice(tmp_path):
    script = tmp_path / "x.sh"
    script.write_text('query aws iam get-role --role-name "$R"\n'
                      'change env KUBECONFIG="$K" gcloud container clusters get-credentials "$C" \\\n    --x y\n'
                      'assume=(aws sts assume-role --role-arn "$A")\n'
                      'has_binding "$role" "$m" iam service-accounts get-iam-policy "$sa"\n'
                      '# change aws iam delete-role\n'
                      'die "run aws eks update-cluster-config --name x"\n'
                      'SIGN_IN="run az login (az login --tenant $T)"\n')
    assert shell_commands(script) == {
        ("aws", "iam", "get-role"), ("gcloud", "container", "clusters", "get-credentials"),
        ("aws", "sts", "assume-role"), ("gcloud", "iam", "service-accounts", "get-iam-policy")}


# --- GKE ----------------------------------------------------------------------------------

# google.cloud.container_v1.ClusterManagerClient method -> the REST method it calls (each
# method's reference page names its RPC: CreateNodePool is projects.locations.clusters.nodePools.create).
GKE_CLIENT_METHODS = {
    "get_cluster": "projects.locations.clusters.get",
    "list_clusters": "projects.locations.clusters.list",
    "update_cluster": "projects.locations.clusters.update",
    "create_node_pool": "projects.locations.clusters.nodePools.create",
    "delete_node_pool": "projects.locations.clusters.nodePools.delete",
    "get_node_pool": "projects.locations.clusters.nodePools.get",
    "list_node_pools": "projects.locations.clusters.nodePools.list",
    "get_operation": "projects.locations.operations.get",
    "list_operations": "projects.locations.operations.list",
}
# Names from the google provider the rendered code uses -> the REST methods they call
# (google provider 22.8: GKEStartPodOperator -> GKEClusterAuthDetails.fetch_cluster_info ->
# GKEHook.get_cluster -> ClusterManagerClient.get_cluster; the pod calls use a google-auth
# token against the Kubernetes API, which RBAC governs).
GOOGLE_PROVIDER = {
    "GKEStartPodOperator": ["projects.locations.clusters.get"],
    "GKEHook": [],  # get_cluster_manager_client() builds a client and calls nothing
    "GoogleBaseHook": [],  # check_remote_cluster: get_credentials() and a token refresh, no GKE call
}


@cache
def cluster_manager_methods() -> frozenset[str]:
    """Every API method of the real ClusterManagerClient (so that a new call cannot go unseen)."""
    from google.cloud.container_v1 import ClusterManagerClient
    from google.cloud.container_v1.services.cluster_manager.transports.base import ClusterManagerTransport

    rpcs = {name for name, value in vars(ClusterManagerTransport).items() if isinstance(value, property)}
    return frozenset(name for name in rpcs if callable(getattr(ClusterManagerClient, name, None)))


def gke_methods_called(root: Path) -> dict[str, set[str]]:
    """REST method -> the files that call it."""
    found: dict[str, set[str]] = {}
    for path, tree in python_sources(root).items():
        for name in called_attributes(tree) & cluster_manager_methods():
            assert name in GKE_CLIENT_METHODS, f"{path} calls ClusterManagerClient.{name}: map it in GKE_CLIENT_METHODS"
            found.setdefault(GKE_CLIENT_METHODS[name], set()).add(path)
        for name in imported_from(tree, "airflow.providers.google"):
            assert name in GOOGLE_PROVIDER, f"{path} uses {name} from the google provider: map it in GOOGLE_PROVIDER"
            for method in GOOGLE_PROVIDER[name]:
                found.setdefault(method, set()).add(path)
    return found


def gke_permissions(method: str) -> set[str]:
    assert method in GKE["methods"], f"{method} is not in Google's GKE API permissions table"
    return set(GKE["methods"][method]["permissions"])


def table_permissions() -> set[str]:
    return {p for row in GKE["methods"].values() for p in row["permissions"] + row.get("optional", [])}


def test_gke_table_is_sourced_and_has_no_node_pool_permissions():
    assert GKE["source"]["url"].startswith("https://cloud.google.com/kubernetes-engine/docs/reference/api-permissions")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", GKE["source"]["read_on"])
    assert not {p for p in table_permissions() if p.startswith("container.nodePools.")}
    assert set(GKE_CLIENT_METHODS.values()) <= set(GKE["methods"])
    assert set(GKE_CLIENT_METHODS) <= cluster_manager_methods(), "a mapped name is no ClusterManagerClient method"


@pytest.mark.parametrize("answers", [c for c in CASES if c.values[0]["cloud"] == "gcp"])
def test_gke_custom_role_is_what_the_calls_need(render, answers):
    """Each call's permissions are in the custom role (or in clusterViewer, which every GKE
    project grants), every role permission is in Google's table, and each one is needed."""
    project = render(answers)
    called = gke_methods_called(project.path)
    needed = {p: sorted(files) for method, files in called.items() for p in gke_permissions(method)}
    role_file = project.path / "gcp" / "gpu-node-pools-role.yaml"
    viewer = set(GKE["predefined_roles"]["roles/container.clusterViewer"])
    if not answers["gpu_node_group"]:
        assert not role_file.exists()
        assert set(needed) <= viewer, f"calls need more than roles/container.clusterViewer: {needed}"
        return
    role = set(yaml.safe_load(role_file.read_text())["includedPermissions"])
    unknown = role - table_permissions()
    assert not unknown, (f"{sorted(unknown)} are not permissions in Google's GKE API table "
                         "(nodePools methods need container.clusters.*)")
    missing = {p: f for p, f in needed.items() if p not in role | viewer}
    assert not missing, f"the custom role lacks what these calls need: {missing}"
    node_pool_needs = {p for m, files in called.items() for p in gke_permissions(m)
                       if any("gpu" in f for f in files)}
    unused = role - node_pool_needs
    assert not unused, f"{sorted(unused)} in the custom role: no call of the GPU DAG needs them"
    assert "projects.locations.clusters.nodePools.create" in called  # the finder sees the DAG at all


def test_gke_role_says_what_clusters_update_allows():
    role = next((Path(__file__).parent.parent / "{{cookiecutter.project_slug}}" / "gcp").iterdir()).read_text()
    assert "container.clusters.update" in role and "other change" in role


# --- AWS ------------------------------------------------------------------------------------


@cache
def aws_table() -> dict[str, dict]:
    """parliament's copy of the Service Authorization Reference: prefix -> privilege -> row."""
    import parliament

    path = Path(parliament.__file__).parent / "iam_definition.json"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == AWS["source"]["sha256"], (
        "parliament's iam_definition.json changed: re-read the rows this project uses, then update the sha256 "
        "in tests/permission_tables/aws_service_authorization.json")
    return {s["prefix"]: {p["privilege"]: p for p in s["privileges"]} for s in json.loads(path.read_text())}


def aws_action_exists(action: str) -> bool:
    prefix, _, name = action.partition(":")
    return name in aws_table().get(prefix, {})


@cache
def boto_operations(service: str) -> dict[str, str]:
    """snake_case and kebab-case operation name -> OperationName, from botocore's model."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op, sep): op for op in model.operation_names for sep in ("_", "-")}


# Names from the amazon provider -> the IAM actions they make (amazon provider 9.39, hooks/eks.py,
# operators/eks.py, sensors/eks.py, triggers/eks.py: each call's boto3 operation).
AMAZON_PROVIDER = {
    "EksCreateNodegroupOperator": ["eks:CreateNodegroup"],  # wait_for_completion=False: no waiter
    "EksNodegroupStateSensor": ["eks:DescribeNodegroup"],
    "EksDeleteNodegroupOperator": ["eks:DeleteNodegroup", "eks:DescribeNodegroup"],  # deferred nodegroup_deleted waiter
    "EksPodOperator": ["eks:DescribeCluster"],  # generate_config_file; the token is a presigned GetCallerIdentity
    "EksHook": [], "NodegroupStates": [], "StsHook": [],  # what they call is found as a boto3 call or a hook method
}
EKS_HOOK_METHODS = {"get_nodegroup_state": ["eks:DescribeNodegroup"], "describe_cluster": ["eks:DescribeCluster"]}
AWS_SERVICES = AWS["services_used"]


def aws_actions_called(root: Path) -> dict[str, set[str]]:
    """IAM action -> the files whose code makes it."""
    found: dict[str, set[str]] = {}
    for path, tree in python_sources(root).items():
        actions = []
        for name in called_attributes(tree):
            actions += EKS_HOOK_METHODS.get(name, [])
            actions += [f"{s}:{boto_operations(s)[name]}" for s in AWS_SERVICES if name in boto_operations(s)]
        for name in imported_from(tree, "airflow.providers.amazon"):
            assert name in AMAZON_PROVIDER, f"{path} uses {name} from the amazon provider: map it in AMAZON_PROVIDER"
            actions += AMAZON_PROVIDER[name]
        # A presigned STS query (the EKS token): ?Action=GetCallerIdentity.
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        actions += [f"sts:{a}" for s in strings for a in re.findall(r"[?&]Action=(\w+)", s)]
        for action in actions:
            found.setdefault(action, set()).add(path)
    for action in list(found):
        for extra in AWS["api_operation_extras"].get(action, {}).get("also", []):
            found.setdefault(extra, set()).update(found[action])
    return found


def policy_actions(path: Path) -> set[str]:
    actions = set()
    for statement in json.loads(path.read_text())["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def test_aws_table_is_parliaments_copy_and_knows_the_services():
    assert AWS["source"]["package"] == "parliament"
    assert set(AWS_SERVICES) <= set(aws_table())
    for action, row in AWS["api_operation_extras"].items():
        if action == "source":
            continue
        assert aws_action_exists(action) and all(aws_action_exists(a) for a in row["also"]), action
    assert all(aws_action_exists(a) for a in AWS["needs_no_grant"])


@pytest.mark.parametrize("answers", [c for c in CASES if c.values[0]["cloud"] == "aws"])
def test_aws_runner_policy_is_what_the_calls_need(render, answers):
    """Every AWS action the DAGs and include/ make is real; the runner role's policy grants
    exactly the ones made as the runner (sts:AssumeRole is the trust policy's, a presigned
    GetCallerIdentity needs nothing), and every action it names is real."""
    project = render(answers)
    called = aws_actions_called(project.path)
    unknown = sorted(a for a in called if not aws_action_exists(a))
    assert not unknown, f"not actions in the Service Authorization Reference: {unknown}"
    trust = json.loads((project.path / "aws" / "trust-policy.json").read_text())["Statement"]
    assert all(aws_action_exists(a) for s in trust for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    assert any("sts:AssumeRole" in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]) for s in trust)
    as_runner = {a: sorted(f) for a, f in called.items() if a not in AWS["needs_no_grant"] and a != "sts:AssumeRole"}
    policy_file = project.path / "aws" / "runner-policy.json"
    if not policy_file.exists():
        assert not as_runner, f"no aws/runner-policy.json, yet the runner makes {as_runner}"
        return
    granted = policy_actions(policy_file)
    assert not sorted(a for a in granted if not aws_action_exists(a)), "the runner policy names unknown actions"
    missing = {a: f for a, f in as_runner.items() if a not in granted}
    assert not missing, f"aws/runner-policy.json lacks what these calls need: {missing}"
    unused = granted - set(as_runner)
    assert not unused, f"aws/runner-policy.json grants {sorted(unused)}: no call needs them"
    if answers["gpu_node_group"]:
        assert {"eks:CreateNodegroup", "eks:DeleteNodegroup", "eks:DescribeNodegroup"} <= set(called)


# aws CLI commands that are not one API operation of the same name (CLI customizations).
AWS_CLI_CUSTOM = {("aws", "eks", "update-kubeconfig"): ["eks:DescribeCluster"]}


def aws_cli_actions(command: tuple[str, ...]) -> list[str]:
    if command in AWS_CLI_CUSTOM:
        return AWS_CLI_CUSTOM[command]
    _, service, verb = command[:3]
    operation = boto_operations(service).get(verb)
    assert operation, f"`{' '.join(command)}`: {service} has no operation {verb}"
    action = f"{service}:{operation}"
    return [action, *AWS["api_operation_extras"].get(action, {}).get("also", [])]


def aws_setup_actions(root: Path) -> dict[str, list[str]]:
    commands = sorted(c for c in setup_commands(root, "aws") if c[0] == "aws")
    return {" ".join(c): aws_cli_actions(c) for c in commands}


@pytest.mark.parametrize("answers", [c for c in CASES if c.values[0]["cloud"] == "aws"][-1:])
def test_aws_setup_commands_map_to_real_actions(render, answers):
    actions = aws_setup_actions(render(answers).path)
    assert "aws iam create-role" in actions and "aws eks create-access-entry" in actions, actions
    unknown = {c: a for c, acts in actions.items() for a in acts if not aws_action_exists(a)}
    assert not unknown, f"setup commands whose actions are not in the reference: {unknown}"


# --- GKE setup (gcloud) ---------------------------------------------------------------------

# gcloud command -> the REST methods it calls (gcloud's own reference page names each API).
GCLOUD_COMMANDS = {
    ("gcloud", "config", "get-value"): [],  # local configuration
    ("gcloud", "projects", "describe"): ["cloudresourcemanager.projects.get"],
    ("gcloud", "projects", "get-iam-policy"): ["cloudresourcemanager.projects.getIamPolicy"],
    ("gcloud", "projects", "add-iam-policy-binding"): ["cloudresourcemanager.projects.getIamPolicy",
                                                       "cloudresourcemanager.projects.setIamPolicy"],
    ("gcloud", "iam", "roles", "describe"): ["iam.projects.roles.get"],
    ("gcloud", "iam", "roles", "create"): ["iam.projects.roles.create"],
    ("gcloud", "iam", "roles", "update"): ["iam.projects.roles.get", "iam.projects.roles.patch"],
    ("gcloud", "iam", "service-accounts", "describe"): ["iam.projects.serviceAccounts.get"],
    ("gcloud", "iam", "service-accounts", "create"): ["iam.projects.serviceAccounts.create"],
    ("gcloud", "iam", "service-accounts", "get-iam-policy"): ["iam.projects.serviceAccounts.getIamPolicy"],
    ("gcloud", "iam", "service-accounts", "add-iam-policy-binding"): ["iam.projects.serviceAccounts.getIamPolicy",
                                                                      "iam.projects.serviceAccounts.setIamPolicy"],
    ("gcloud", "container", "clusters", "describe"): ["projects.locations.clusters.get"],
    ("gcloud", "container", "clusters", "get-credentials"): ["projects.locations.clusters.get"],
}


def gcloud_permissions(method: str) -> list[str]:
    if method in GKE["methods"]:
        return GKE["methods"][method]["permissions"]
    assert method in GKE["setup_methods"], f"{method} is in neither Google table"
    return GKE["setup_methods"][method]


def gcp_setup_permissions(root: Path) -> dict[str, list[str]]:
    rights = {}
    for command in sorted(c for c in setup_commands(root, "gcp") if c[0] == "gcloud"):
        key = next((k for k in GCLOUD_COMMANDS if command[:len(k)] == k), None)
        assert key, f"`{' '.join(command)}` is not in GCLOUD_COMMANDS: map it to its REST methods"
        rights[" ".join(key)] = [p for m in GCLOUD_COMMANDS[key] for p in gcloud_permissions(m)]
    return rights


@pytest.mark.parametrize("answers", [c for c in CASES if c.values[0]["cloud"] == "gcp"][-1:])
def test_gcp_setup_commands_map_to_permissions(render, answers):
    rights = gcp_setup_permissions(render(answers).path)
    assert "gcloud iam roles create" in rights and "gcloud projects add-iam-policy-binding" in rights, rights


# --- Azure ----------------------------------------------------------------------------------

# az command -> the resource provider operations its ARM call needs ("graph": Microsoft Graph,
# "local": no call). From each command's REST API (az identity federated-credential create is
# PUT .../userAssignedIdentities/{name}/federatedIdentityCredentials/{name}, and so on).
AZ_COMMANDS = {
    ("az", "account", "show"): ["local"],
    ("az", "ad", "sp", "show"): ["graph"],
    ("az", "ad", "signed-in-user", "show"): ["graph"],
    ("az", "identity", "list"): ["Microsoft.ManagedIdentity/userAssignedIdentities/read"],
    ("az", "identity", "federated-credential", "list"):
        ["Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read"],
    ("az", "identity", "federated-credential", "create"):
        ["Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"],
    ("az", "aks", "show"): ["Microsoft.ContainerService/managedClusters/read"],
    # Without --admin: the user credential (the admin credential is listClusterAdminCredential).
    ("az", "aks", "get-credentials"): ["Microsoft.ContainerService/managedClusters/listClusterUserCredential/action"],
}


def azure_setup_operations(root: Path) -> dict[str, list[str]]:
    rights = {}
    for command in sorted(c for c in setup_commands(root, "azure") if c[0] == "az"):
        key = next((k for k in AZ_COMMANDS if command[:len(k)] == k), None)
        assert key, f"`{' '.join(command)}` is not in AZ_COMMANDS: map it to its resource provider operations"
        rights[" ".join(key)] = AZ_COMMANDS[key]
    return rights


def test_azure_table_is_sourced():
    assert all(u.startswith("https://learn.microsoft.com/") for u in AZURE["source"]["urls"].values())
    assert AZ_COMMANDS and all(
        op in AZURE["operations"] or op in ("graph", "local") for ops in AZ_COMMANDS.values() for op in ops)


def test_azure_setup_commands_map_to_real_operations(render):
    rights = azure_setup_operations(render({"cloud": "azure", "xcom": False, **CUSTOM}).path)
    assert "az identity federated-credential create" in rights and "az aks get-credentials" in rights, rights
    unknown = {c: op for c, ops in rights.items() for op in ops
               if op not in AZURE["operations"] and op not in ("graph", "local")}
    assert not unknown, f"not operations in Azure's resource provider table: {unknown}"
    # No role assignment: the pods' access is Kubernetes RBAC on the identity's object id.
    assert not any(op.startswith("Microsoft.Authorization/") for ops in rights.values() for op in ops)
