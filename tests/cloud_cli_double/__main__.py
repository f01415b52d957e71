"""A recording stand-in for the cloud CLIs and kubectl, for scripts/setup_remote.sh tests.

SIMULATED: no cloud or cluster is reachable here. One Python program is installed under the
names aws, eksctl, gcloud, az, kubelogin and kubectl. It keeps a small model of the remote
side in a JSON state file (IAM roles, clusters, access entries, IAM bindings, managed
identities and their federated credentials, applied Kubernetes objects), answers the calls
the project's scripts make in the shapes the real CLIs print (`--query` is real JMESPath, as
in aws and az), decides `kubectl auth can-i` from the Role and RoleBinding that were applied,
and appends every call to a log with whether it changed the state. Any call it does not know
fails with exit 97, so a script cannot drift from what the double checks.

Who is signed in is state too, per cloud under "login" (aws: the caller identity; gcp: the
account; azure: the account, its tenant and subscriptions, and the object id). Without it,
every call fails as the real CLI does when signed out; with "expired": true, as it does when
the sign-in expired. "deny" lists calls (by their leading words, e.g. "iam get-role") that
fail as the real CLI does when the signed-in identity is not allowed. The real error texts
are modelled, multi-line where the real CLI prints several lines (gcloud, az).

Environment: CLI_DOUBLE_STATE (state file), CLI_DOUBLE_LOG (JSON-lines call log).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jmespath
import yaml

STATE = Path(os.environ["CLI_DOUBLE_STATE"])
LOG = Path(os.environ["CLI_DOUBLE_LOG"])
CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"


class Failed(Exception):
    """A non-zero exit: message to stderr, or ``out`` to stdout (kubectl auth can-i says "no")."""

    def __init__(self, message: str, code: int = 1, out: str = ""):
        super().__init__(message)
        self.code, self.out = code, out


def opt(args: list[str], name: str, default=None):
    if name in args:
        return args[args.index(name) + 1]
    if default is None:
        raise Failed(f"cli double: {name} is required here", 97)
    return default


def read_file_arg(value: str) -> str:
    return Path(value.removeprefix("file://")).read_text()


def printed(value, output: str) -> str:
    """aws --output text / az --output tsv, or JSON."""
    if output in ("text", "tsv"):
        if output == "text" and isinstance(value, list) and not any(isinstance(v, list | dict) for v in value):
            value = [value]  # aws: a list of scalars is one tab-separated line; az tsv: one per line
        rows = value if isinstance(value, list) else [value]
        lines = []
        for row in rows:
            cells = row if isinstance(row, list) else [row]
            lines.append("\t".join("None" if c is None else str(c) for c in cells))
        return "\n".join(lines) if value not in (None, []) or output == "text" else ""
    return json.dumps(value, indent=2)


def answer(doc, args: list[str]) -> str:
    query = opt(args, "--query", "")
    value = jmespath.search(query, doc) if query else doc
    return printed(value, opt(args, "--output", "json"))


def write_kubeconfig(path: str, server: str) -> None:
    Path(path).write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "admin",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": CA}}],
        "users": [{"name": "admin", "user": {"token": "admin"}}],
        "contexts": [{"name": "admin", "context": {"cluster": "c", "user": "admin"}}],
    }))


def leading(args: list[str], n: int) -> str:
    """The first n words of a call that are not options, e.g. 'iam get-role'."""
    return " ".join([a for a in args if not a.startswith("-")][:n])


def denied(side: dict, args: list[str], n: int) -> bool:
    return any(leading(args, n).startswith(prefix) for prefix in side.get("deny", []))


def operation(subcommand: str) -> str:
    """aws's API operation name of a subcommand: get-role -> GetRole."""
    return "".join(part.capitalize() for part in subcommand.split("-"))


def aws_principal(side: dict, arn: str) -> str:
    """The IAM principal of a caller ARN: an assumed role's role ARN (with its path), or the ARN."""
    if ":assumed-role/" not in arn:
        return arn
    role = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
    return role_arn(side, role)


def role_arn(side: dict, name: str) -> str:
    path = side.get("role_paths", {}).get(name, "/")
    return f"arn:aws:iam::{side.get('login', {}).get('Account', '000000000000')}:role{path}{name}"


def aws_signed_in(side: dict, args: list[str]) -> None:
    """Fail as aws does when signed out or expired, or when the call is not allowed."""
    login = side.get("login")
    if login is None:
        raise Failed('Unable to locate credentials. You can configure credentials by running "aws configure".', 253)
    op = operation(args[1]) if len(args) > 1 else ""
    if login.get("expired"):
        raise Failed(f"An error occurred (ExpiredToken) when calling the {op} operation: "
                     "The security token included in the request is expired", 254)
    if denied(side, args, 2):
        raise Failed(f"An error occurred (AccessDenied) when calling the {op} operation: User: {login['Arn']} "
                     f"is not authorized to perform: {args[0]}:{op} on resource: "
                     f"{role_arn(side, opt(args, '--role-name')) if '--role-name' in args else '*'} because no "
                     f"identity-based policy allows the {args[0]}:{op} action", 254)


def aws(state: dict, args: list[str]) -> str:
    side = state.setdefault("aws", {})
    roles, clusters = side.setdefault("roles", {}), side.setdefault("clusters", {})
    entries = side.setdefault("access_entries", {})
    aws_signed_in(side, args)
    match args[:2]:
        case ["sts", "get-caller-identity"]:
            login = side["login"]
            return answer({k: login[k] for k in ("UserId", "Account", "Arn")}, args)
        case ["sts", "assume-role"]:
            caller, target = aws_principal(side, side["login"]["Arn"]), opt(args, "--role-arn")
            name = target.rsplit("/", 1)[1]
            external_id = opt(args, "--external-id", "")

            def admits(s: dict) -> bool:
                principals = s.get("Principal", {}).get("AWS", [])
                condition = s.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId")
                return (s.get("Effect") == "Allow" and s.get("Action") == "sts:AssumeRole"
                        and caller in ([principals] if isinstance(principals, str) else principals)
                        and condition in (None, external_id))

            if name not in roles or role_arn(side, name) != target or not any(
                    admits(s) for s in roles[name].get("Statement", [])):
                raise Failed(f"An error occurred (AccessDenied) when calling the AssumeRole operation: User: "
                             f"{side['login']['Arn']} is not authorized to perform: sts:AssumeRole on resource: "
                             f"{target}", 254)
            return answer({"Credentials": {"AccessKeyId": "ASIAEXAMPLEDOUBLE", "SessionToken": "double",
                                           "Expiration": "2030-01-01T00:15:00Z"},
                           "AssumedRoleUser": {"Arn": f"arn:aws:sts::x:assumed-role/{name}/"
                                                      f"{opt(args, '--role-session-name')}"}}, args)
        case ["iam", "get-role"]:
            name = opt(args, "--role-name")
            if name not in roles:
                raise Failed(f"An error occurred (NoSuchEntity) when calling the GetRole operation: "
                             f"The role with name {name} cannot be found.", 254)
            return answer({"Role": {"RoleName": name, "Arn": role_arn(side, name),
                                    "AssumeRolePolicyDocument": roles[name]}}, args)
        case ["iam", "create-role"]:
            name = opt(args, "--role-name")
            if name in roles:
                raise Failed("An error occurred (EntityAlreadyExists)", 254)
            roles[name] = json.loads(read_file_arg(opt(args, "--assume-role-policy-document")))
            return answer({"Role": {"RoleName": name}}, args)
        case ["iam", "get-role-policy"]:
            name, policy = opt(args, "--role-name"), opt(args, "--policy-name")
            if policy not in side.get("role_policies", {}).get(name, {}):
                raise Failed(f"An error occurred (NoSuchEntity): The role policy with name {policy} cannot be found.", 254)
            return answer({"RoleName": name, "PolicyName": policy, "PolicyDocument": side["role_policies"][name][policy]}, args)
        case ["iam", "put-role-policy"]:
            name = opt(args, "--role-name")
            if name not in roles:
                raise Failed("An error occurred (NoSuchEntity): role not found", 254)
            side.setdefault("role_policies", {}).setdefault(name, {})[opt(args, "--policy-name")] = json.loads(
                read_file_arg(opt(args, "--policy-document")))
            return ""
        case ["iam", "list-attached-role-policies"]:
            name = opt(args, "--role-name")
            attached = side.get("attached", {}).get(name, [])
            return answer({"AttachedPolicies": [{"PolicyName": a.rsplit("/", 1)[1], "PolicyArn": a} for a in attached]}, args)
        case ["iam", "attach-role-policy"]:
            side.setdefault("attached", {}).setdefault(opt(args, "--role-name"), []).append(opt(args, "--policy-arn"))
            return ""
        case ["iam", "create-service-linked-role"]:
            roles["AWSServiceRoleForAmazonEKSNodegroup"] = {"service": opt(args, "--aws-service-name")}
            return ""
        case ["iam", "update-assume-role-policy"]:
            roles[opt(args, "--role-name")] = json.loads(read_file_arg(opt(args, "--policy-document")))
            return ""
        case ["eks", "describe-cluster"]:
            name = opt(args, "--name")
            if name not in clusters or clusters[name]["region"] != opt(args, "--region"):
                raise Failed(f"An error occurred (ResourceNotFoundException): No cluster found for name: {name}.", 254)
            c = clusters[name]
            return answer({"cluster": {"name": name, "endpoint": c["endpoint"], "status": "ACTIVE",
                                       "certificateAuthority": {"data": CA},
                                       "accessConfig": {"authenticationMode": c["mode"]}}}, args)
        case ["eks", "describe-access-entry"]:
            cluster, principal = opt(args, "--cluster-name"), opt(args, "--principal-arn")
            if principal not in entries.get(cluster, {}):
                raise Failed("An error occurred (ResourceNotFoundException): "
                             "The specified access entry resource is not found.", 254)
            return answer({"accessEntry": {"principalArn": principal, "kubernetesGroups": entries[cluster][principal]}}, args)
        case ["eks", "create-access-entry"]:
            spec = json.loads(read_file_arg(opt(args, "--cli-input-json")))
            if spec["clusterName"] not in clusters:
                raise Failed("An error occurred (ResourceNotFoundException): No cluster found", 254)
            if clusters[spec["clusterName"]]["mode"] == "CONFIG_MAP":
                raise Failed("An error occurred (InvalidRequestException): authentication mode CONFIG_MAP", 254)
            entries.setdefault(spec["clusterName"], {})[spec["principalArn"]] = spec["kubernetesGroups"]
            return answer({"accessEntry": spec}, args)
        case ["eks", "update-access-entry"]:
            entries[opt(args, "--cluster-name")][opt(args, "--principal-arn")] = [opt(args, "--kubernetes-groups")]
            return ""
        case ["eks", "update-kubeconfig"]:
            write_kubeconfig(opt(args, "--kubeconfig"), clusters[opt(args, "--name")]["endpoint"])
            return "Added new context"
    raise Failed(f"cli double: aws {' '.join(args[:2])} is not simulated", 97)


def eksctl(state: dict, args: list[str]) -> str:
    if args[:2] != ["create", "cluster"]:
        raise Failed(f"cli double: eksctl {' '.join(args[:2])} is not simulated", 97)
    config = yaml.safe_load(Path(opt(args, "-f")).read_text())
    side = state.setdefault("aws", {})
    name = config["metadata"]["name"]
    side.setdefault("clusters", {})[name] = {
        "region": config["metadata"]["region"], "mode": config["accessConfig"]["authenticationMode"],
        "endpoint": f"https://{name.upper()}.gr7.{config['metadata']['region']}.eks.amazonaws.com"}
    for entry in config["accessConfig"].get("accessEntries", []):
        side.setdefault("access_entries", {}).setdefault(name, {})[entry["principalARN"]] = entry["kubernetesGroups"]
    return f"EKS cluster \"{name}\" is ready"


def gcloud_signed_in(side: dict, args: list[str]) -> None:
    """Fail as gcloud does when no account is active, its sign-in expired, or it is not allowed."""
    groups = 3 if args[:1] in (["container"], ["iam"]) else 2  # e.g. container clusters describe, projects describe
    login, command = side.get("login"), "gcloud." + ".".join(args[:groups])
    if login is None:
        raise Failed(f"ERROR: ({command}) You do not currently have an active account selected.\nPlease run:\n\n"
                     "  $ gcloud auth login\n\nto obtain new credentials.\n\nIf you have already logged in with "
                     "a different account, run:\n\n  $ gcloud config set account ACCOUNT\n\n"
                     "to select an already authenticated account to use.")
    if login.get("expired"):
        raise Failed(f"ERROR: ({command}) There was a problem refreshing your current auth tokens: Reauthentication "
                     "failed. cannot prompt during non-interactive execution.\nPlease run:\n\n  $ gcloud auth login\n\n"
                     "to obtain new credentials.")
    if denied(side, args, 3) or (args[:2] == ["projects", "describe"] and args[2] not in side.get("projects", [])):
        target = args[2] if len(args) > 2 else "?"
        raise Failed(f"ERROR: ({command}) [{login['account']}] does not have permission to access projects instance "
                     f"[{target}] (or it may not exist): The caller does not have permission. This command is "
                     f"authenticated as {login['account']} which is the active account specified by the "
                     "[core/account] property.\n- '@type': type.googleapis.com/google.rpc.ErrorInfo\n"
                     "  domain: iam.googleapis.com\n  reason: IAM_PERMISSION_DENIED")


def gcloud(state: dict, args: list[str]) -> str:
    side = state.setdefault("gcp", {})
    clusters, bindings = side.setdefault("clusters", {}), side.setdefault("bindings", [])
    if args[:2] == ["config", "get-value"]:
        value = side.get("login", {}).get(args[2])
        if value is None:
            print("(unset)", file=sys.stderr)
        return value or ""
    gcloud_signed_in(side, args)
    if args[:2] == ["projects", "describe"]:
        return args[2]
    if args[:3] == ["container", "clusters", "describe"] or args[:3] == ["container", "clusters", "get-credentials"]:
        name = args[3]
        if name not in clusters:
            raise Failed(f"ERROR: (gcloud.container.clusters.describe) ResponseError: code=404, message=Not found: {name}.")
        if args[2] == "get-credentials":
            write_kubeconfig(os.environ["KUBECONFIG"], f"https://{clusters[name]['endpoint']}")
            return "kubeconfig entry generated"
        doc = {"name": name, "endpoint": clusters[name]["endpoint"], "masterAuth": {"clusterCaCertificate": CA}}
        return name if opt(args, "--format") == "value(name)" else json.dumps(doc)
    sa_bindings, accounts = side.setdefault("sa_bindings", {}), side.setdefault("service_accounts", [])
    custom_roles = side.setdefault("custom_roles", {})
    if args[:2] == ["projects", "get-iam-policy"] or args[:3] == ["iam", "service-accounts", "get-iam-policy"]:
        # The one filter the scripts use: "bindings.role=R AND bindings.members=M".
        role, member = (part.split("=", 1)[1] for part in opt(args, "--filter").split(" AND "))
        held = bindings if args[0] == "projects" else sa_bindings.get(args[3], [])
        return role if [role, member] in held else ""
    if args[:2] == ["projects", "add-iam-policy-binding"] or args[:3] == ["iam", "service-accounts", "add-iam-policy-binding"]:
        held = bindings if args[0] == "projects" else sa_bindings.setdefault(args[3], [])
        pair = [opt(args, "--role"), opt(args, "--member")]
        if pair not in held:
            held.append(pair)
        return "Updated IAM policy"
    if args[:3] == ["iam", "roles", "describe"]:
        if args[3] not in custom_roles:
            raise Failed(f"ERROR: (gcloud.iam.roles.describe) NOT_FOUND: The role named {args[3]} was not found.")
        return ";".join(custom_roles[args[3]])
    if args[:3] in (["iam", "roles", "create"], ["iam", "roles", "update"]):
        custom_roles[args[3]] = sorted(yaml.safe_load(Path(opt(args, "--file")).read_text())["includedPermissions"])
        return f"Created role [{args[3]}]."
    if args[:3] == ["iam", "service-accounts", "describe"]:
        if args[3] not in accounts:
            raise Failed(f"ERROR: (gcloud.iam.service-accounts.describe) NOT_FOUND: {args[3]}")
        return args[3]
    if args[:3] == ["iam", "service-accounts", "create"]:
        accounts.append(f"{args[3]}@{opt(args, '--project')}.iam.gserviceaccount.com")
        return ""
    raise Failed(f"cli double: gcloud {' '.join(args[:3])} is not simulated", 97)


IDENTITIES = "Microsoft.ManagedIdentity/userAssignedIdentities"
AZURE_READ_ACTIONS = {"identity list": f"{IDENTITIES}/read",
                      "identity federated-credential": f"{IDENTITIES}/federatedIdentityCredentials/read",
                      "aks show": "Microsoft.ContainerService/managedClusters/read"}


def az_signed_in(side: dict, args: list[str]) -> None:
    """Fail as az does when signed out or expired, or when the call is not allowed."""
    login = side.get("login")
    if login is None:
        raise Failed("ERROR: Please run 'az login' to setup account.")
    if login.get("expired"):
        raise Failed("ERROR: AADSTS700082: The refresh token has expired due to inactivity. The token was issued on "
                     "2024-01-01T00:00:00Z and was inactive for 90.00:00:00.\nTrace ID: double\n"
                     "Interactive authentication is needed. Please run:\naz login")
    if denied(side, args, 3):
        action = AZURE_READ_ACTIONS.get(leading(args, 2), "Microsoft.Resources/read")
        message = (f"The client '{login['user']['name']}' with object id '{login['objectId']}' does not have "
                   f"authorization to perform action '{action}' over scope "
                   f"'/subscriptions/{opt(args, '--subscription', 'x')}' or the scope is invalid. If access was "
                   "recently granted, please refresh your credentials.")
        raise Failed(f"(AuthorizationFailed) {message}\nCode: AuthorizationFailed\nMessage: {message}")


def az(state: dict, args: list[str]) -> str:
    side = state.setdefault("azure", {})
    identities, clusters = side.setdefault("identities", []), side.setdefault("clusters", {})
    az_signed_in(side, args)
    login = side["login"]
    match args[:3]:
        case ["account", "show", *_]:
            subscription = opt(args, "--subscription", login["subscriptions"][0])
            if subscription not in login["subscriptions"]:
                raise Failed(f"ERROR: Subscription '{subscription}' not found. Check the spelling and casing and try again.")
            return answer({"id": subscription, "tenantId": login["tenantId"], "user": login["user"]}, args)
        case ["ad", "signed-in-user", "show"]:
            if login["user"]["type"] != "user":
                raise Failed("ERROR: /me request is only valid with delegated authentication flow.")
            return answer({"id": login["objectId"], "userPrincipalName": login["user"]["name"]}, args)
        case ["ad", "sp", "show"]:
            if login["user"]["type"] != "servicePrincipal" or opt(args, "--id") != login["user"]["name"]:
                raise Failed(f"ERROR: Service principal '{opt(args, '--id')}' doesn't exist")
            return answer({"id": login["objectId"], "appId": login["user"]["name"]}, args)
        case ["identity", "list", *_]:
            return answer(identities, args)
        case ["identity", "federated-credential", "list"]:
            (identity,) = [i for i in identities if i["name"] == opt(args, "--identity-name")]
            return answer(identity["federatedCredentials"], args)
        case ["identity", "federated-credential", "create"]:
            (identity,) = [i for i in identities if i["name"] == opt(args, "--identity-name")]
            identity["federatedCredentials"].append({"name": opt(args, "--name"), "issuer": opt(args, "--issuer"),
                                                     "subject": opt(args, "--subject")})
            return ""
        case ["aks", "show", *_]:
            name = opt(args, "--name")
            if name not in clusters:
                raise Failed(f"(ResourceNotFound) The Resource 'Microsoft.ContainerService/managedClusters/{name}' "
                             "was not found.", 3)
            return answer({"id": f"/subscriptions/x/managedClusters/{name}", "fqdn": clusters[name]["fqdn"]}, args)
        case ["aks", "get-credentials", *_]:
            write_kubeconfig(opt(args, "--file"), f"https://{clusters[opt(args, '--name')]['fqdn']}:443")
            return ""
    raise Failed(f"cli double: az {' '.join(args[:3])} is not simulated", 97)


def kubelogin(state: dict, args: list[str]) -> str:
    if args[:1] != ["convert-kubeconfig"] or not Path(opt(args, "--kubeconfig")).exists():
        raise Failed("cli double: kubelogin call is not simulated", 97)
    return ""


def object_key(doc: dict) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']}/{meta.get('namespace', '')}/{meta['name']}"


def can_i(objects: dict, verb: str, resource: str, namespace: str, user: str, groups: list[str],
          subresource: str = "") -> bool:
    def subject_matches(s: dict) -> bool:
        if s["kind"] == "User":
            return s["name"] == user
        if s["kind"] == "Group":
            return s["name"] in groups
        return user == f"system:serviceaccount:{s.get('namespace', namespace)}:{s['name']}"

    # As kubectl auth can-i: TYPE or TYPE/NAME ("pods/log" is the pod named log), and the
    # subresource only from --subresource; RBAC matches "pods/log" in a rule's resources.
    kind, _, name = resource.partition("/")
    wanted = f"{kind}/{subresource}" if subresource else kind

    def rule_allows(rule: dict) -> bool:
        if verb not in rule["verbs"] or wanted not in rule["resources"]:
            return False
        return not rule.get("resourceNames") or name in rule["resourceNames"]

    for binding in (o for o in objects.values() if o["kind"] == "RoleBinding" and o["metadata"]["namespace"] == namespace):
        role = objects.get(f"Role/{namespace}/{binding['roleRef']['name']}")
        if role and any(subject_matches(s) for s in binding["subjects"]):
            if any(rule_allows(r) for r in role["rules"]):
                return True
    return False


def kubectl(state: dict, args: list[str]) -> str:
    objects = state.setdefault("k8s", {})
    if "--kubeconfig" in args and not Path(opt(args, "--kubeconfig")).exists():
        raise Failed(f"error: stat {opt(args, '--kubeconfig')}: no such file or directory")
    rest = list(args)
    while rest[:1] and rest[0] in ("--kubeconfig", "--context"):
        rest = rest[2:]
    words = [w for w in rest[:4] if not w.startswith("-")]
    if words[:1] in (["diff"], ["apply"]):
        docs = [d for d in yaml.safe_load_all(Path(opt(args, "-f")).read_text()) if d]
        if words[0] == "diff":
            for doc in docs:
                ns = doc["metadata"].get("namespace")
                if ns and f"Namespace//{ns}" not in objects:
                    raise Failed(f'Error from server (NotFound): namespaces "{ns}" not found', 2)
            if any(objects.get(object_key(d)) != d for d in docs):
                raise Failed("", 1, out=f"diff -u live/{object_key(docs[0])} merged/{object_key(docs[0])}")
            return ""
        for doc in docs:
            objects[object_key(doc)] = doc
        return "\n".join(f"{d['kind'].lower()}/{d['metadata']['name']} configured" for d in docs)
    if words[:2] == ["auth", "can-i"]:
        groups = [args[i + 1] for i, a in enumerate(args) if a == "--as-group"]
        allowed = can_i(objects, words[2], words[3], opt(args, "--namespace"), opt(args, "--as"), groups,
                        opt(args, "--subresource", ""))
        if not allowed:
            raise Failed("", 1, out="no")
        return "yes"
    if words[:2] == ["config", "view"]:
        return json.dumps({"clusters": [{"name": "c", "cluster": {"server": "https://198.51.100.7:6443",
                                                                  "certificate-authority-data": CA}}]})
    if words[:2] == ["create", "token"]:
        if f"ServiceAccount/{opt(args, '--namespace')}/{words[2]}" not in objects:
            raise Failed(f'error: failed to create token: serviceaccounts "{words[2]}" not found')
        return TOKEN
    raise Failed(f"cli double: kubectl {' '.join(words[:2])} is not simulated", 97)


def pruned(value):
    """The state without empty containers, which reads create with setdefault."""
    if isinstance(value, dict):
        kept = {k: pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ({}, [])}
    return value


TOOLS = {"aws": aws, "eksctl": eksctl, "gcloud": gcloud, "az": az, "kubelogin": kubelogin, "kubectl": kubectl}


def main() -> int:
    tool, args = os.environ.get("CLI_DOUBLE_TOOL") or Path(sys.argv[0]).name, sys.argv[1:]
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    before = json.dumps(pruned(state), sort_keys=True)
    code, out, err = 0, "", ""
    try:
        out = TOOLS[tool](state, args)
    except Failed as failure:
        code, out, err = failure.code, failure.out, str(failure)
    changed = json.dumps(pruned(state), sort_keys=True) != before
    if changed:
        STATE.write_text(json.dumps(pruned(state), indent=1))
    with LOG.open("a") as log:
        log.write(json.dumps({"argv": [tool, *args], "changed": changed, "exit": code}) + "\n")
    if out:
        print(out)
    if err:
        print(err, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
