"""A TEST DOUBLE of the EKS control-plane API on 127.0.0.1 (plain HTTP, rest-json).

SIMULATED: DescribeCluster and the managed node-group calls (CreateNodegroup,
DescribeNodegroup, DeleteNodegroup), in the shapes botocore parses, errors included
(``x-amzn-ErrorType``). The caller is the access key in its SigV4 Authorization header
(the signature itself is not re-checked), which must be a session the STS double handed
out; each call is then allowed only if the rendered permission policy
(aws/runner-policy.json) grants its IAM action on its resource ARN, so the policy is proven
sufficient (Allow statements with wildcards; conditions are not evaluated, parliament checks
those in tests/test_security.py). Node groups move CREATING -> ACTIVE (or CREATE_FAILED) and DELETING -> gone
after a given number of describes, and ``node_groups_ready`` tells the Kubernetes double
which nodes exist, so a pod aimed at a node group is only scheduled while it is ACTIVE.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .auth import EksAuthenticator
from .local import LocalServer

ROUTE = re.compile(r"^/clusters/(?P<cluster>[^/]+)(?:/node-groups(?:/(?P<nodegroup>[^/]+))?)?/?$")


class EksDouble(LocalServer):
    def __init__(self, auth: EksAuthenticator, policy: dict, *, role_arn: str, account: str, endpoint: str, ca_data: str,
                 subnets: tuple[str, ...] = ("subnet-0aaa", "subnet-0bbb"), polls_to_active: int = 2,
                 polls_to_gone: int = 2, create_fails: bool = False):
        self.auth, self.policy, self.account = auth, policy, account
        # The policy is this role's: only its sessions are granted it (arn:...:sts::ACCT:assumed-role/ROLE/...).
        self.session_prefix = role_arn.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/") + "/"
        self.endpoint, self.ca_data, self.subnets = endpoint, ca_data, list(subnets)
        self.polls_to_active, self.polls_to_gone, self.create_fails = polls_to_active, polls_to_gone, create_fails
        self.nodegroups: dict[str, dict] = {}
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                code, payload, error = double.handle(method, self.path.split("?")[0], body,
                                                     self.headers.get("Authorization", ""))
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if error:
                    self.send_header("x-amzn-ErrorType", error)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def do_DELETE(self):  # noqa: N802
                self._serve("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    # -- IAM: the rendered permission policy, Allow statements with wildcards --------------
    def allowed(self, action: str, resource: str) -> bool:
        for statement in self.policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            if statement["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
                    fnmatch.fnmatchcase(resource, r) for r in resources):
                return True
        return False

    def arn(self, cluster: str, nodegroup: str | None = None) -> str:
        base = f"arn:aws:eks:{self.auth.region}:{self.account}"
        return f"{base}:nodegroup/{cluster}/{nodegroup}/uuid-1" if nodegroup else f"{base}:cluster/{cluster}"

    def handle(self, method: str, path: str, body: dict, authorization: str) -> tuple[int, dict, str | None]:
        key = re.search(r"Credential=([A-Z0-9]+)/[^/]+/[^/]+/eks/", authorization)
        credential = self.auth.credentials.get(key.group(1)) if key else None
        match = ROUTE.match(path)
        cluster, nodegroup = (match.group("cluster"), match.group("nodegroup")) if match else (None, None)
        action = {("GET", False): "DescribeCluster", ("POST", True): "CreateNodegroup",
                  ("GET", True): "DescribeNodegroup", ("DELETE", True): "DeleteNodegroup"}.get(
            (method, "/node-groups" in path), "Unknown")
        caller = credential.principal_arn if credential else None
        with self.lock:
            self.calls.append({"action": action, "caller": caller, "nodegroup": nodegroup or body.get("nodegroupName")})
        if credential is None or not caller.startswith(self.session_prefix):
            return 403, {"message": "not signed by a session of the runner role"}, "AccessDeniedException"
        if not match:
            return 404, {"message": f"No cluster found for name: {cluster}."}, "ResourceNotFoundException"
        # As IAM does: the policy is evaluated first, so a cluster the role may not see is a 403, not a 404.
        resource = self.arn(cluster, nodegroup or body.get("nodegroupName")) if action != "CreateNodegroup" else self.arn(cluster)
        if not self.allowed(f"eks:{action}", resource):
            return 403, {"message": f"{caller} is not authorized to perform: eks:{action} on resource: {resource}"}, \
                "AccessDeniedException"
        if cluster != self.auth.cluster_name:
            return 404, {"message": f"No cluster found for name: {cluster}."}, "ResourceNotFoundException"
        with self.lock:
            return getattr(self, action.lower())(cluster, nodegroup, body)

    def describecluster(self, cluster, _nodegroup, _body):
        return 200, {"cluster": {"name": cluster, "arn": self.arn(cluster), "status": "ACTIVE",
                                 "endpoint": self.endpoint, "certificateAuthority": {"data": self.ca_data},
                                 "resourcesVpcConfig": {"subnetIds": self.subnets},
                                 "accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP"}}}, None

    def createnodegroup(self, cluster, _nodegroup, body):
        name = body["nodegroupName"]
        if name in self.nodegroups:
            return 409, {"message": f"NodeGroup already exists with name {name}"}, "ResourceInUseException"
        if not self.allowed("iam:PassRole", body["nodeRole"]):
            return 403, {"message": f"not authorized to perform: iam:PassRole on resource: {body['nodeRole']}"}, \
                "AccessDeniedException"
        self.nodegroups[name] = {"spec": body, "status": "CREATING", "polls": 0, "created": time.time()}
        return 200, {"nodegroup": self._describe(cluster, name)}, None

    def describenodegroup(self, cluster, nodegroup, _body):
        group = self.nodegroups.get(nodegroup)
        if group is None:
            return 404, {"message": f"No node group found for name: {nodegroup}."}, "ResourceNotFoundException"
        group["polls"] += 1
        if group["status"] == "CREATING" and group["polls"] >= self.polls_to_active:
            group["status"] = "CREATE_FAILED" if self.create_fails else "ACTIVE"
        elif group["status"] == "DELETING" and group["polls"] >= self.polls_to_gone:
            del self.nodegroups[nodegroup]
            return 404, {"message": f"No node group found for name: {nodegroup}."}, "ResourceNotFoundException"
        return 200, {"nodegroup": self._describe(cluster, nodegroup)}, None

    def deletenodegroup(self, cluster, nodegroup, _body):
        group = self.nodegroups.get(nodegroup)
        if group is None:
            return 404, {"message": f"No node group found for name: {nodegroup}."}, "ResourceNotFoundException"
        group.update(status="DELETING", polls=0)
        return 200, {"nodegroup": self._describe(cluster, nodegroup)}, None

    def _describe(self, cluster: str, name: str) -> dict:
        group = self.nodegroups[name]
        spec = group["spec"]
        return {"nodegroupName": name, "clusterName": cluster, "nodegroupArn": self.arn(cluster, name),
                "status": group["status"], "nodeRole": spec["nodeRole"], "subnets": spec["subnets"],
                "instanceTypes": spec.get("instanceTypes", []), "amiType": spec.get("amiType"),
                "labels": spec.get("labels", {}), "taints": spec.get("taints", []),
                "scalingConfig": spec.get("scalingConfig", {}), "health": {"issues": []}}

    def node_groups_ready(self) -> list[dict]:
        """The labels of the nodes that exist now (one node per ACTIVE node group)."""
        with self.lock:
            return [{**g["spec"].get("labels", {}), "eks.amazonaws.com/nodegroup": name}
                    for name, g in self.nodegroups.items() if g["status"] == "ACTIVE"]
