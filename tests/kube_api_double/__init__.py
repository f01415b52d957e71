"""A TEST DOUBLE of a Kubernetes API server, for the end-to-end tests. Not a Kubernetes.

No API server can be installed on the machines these tests run on, so this module serves the
part of the Kubernetes API that KubernetesPodOperator and the preflight DAG use, with the
semantics that matter for them, and nothing else:

- HTTPS on 127.0.0.1 with a CA it generates: clients verify TLS against the CA data in the
  rendered connection (no ``disable_verify_ssl``).
- Authentication as real clusters do it, where the tokens can be made here: EKS
  ``k8s-aws-v1.`` tokens are decoded and their SigV4 presigned STS GetCallerIdentity URL is
  verified (regional host, signed ``x-k8s-aws-id`` header equal to the cluster name, age under
  the limit) against a table of fake AWS credentials, the way STS would; the assumed role is
  mapped through an access-entry table to Kubernetes groups. GKE: Google access tokens
  (``ya29.``) are accepted only if the Google token double (``google.py``, a stand-in for
  Google's OAuth2 token endpoint that the real gke-gcloud-auth-plugin signs in to with a
  service-account key) issued them and they have not expired; the user is the service
  account's email, as on GKE. ServiceAccount tokens are HMAC-signed JWTs with an expiry.
  Anything else is a 401 Status.
- Authorization with Kubernetes RBAC semantics from the rendered Role/RoleBinding (API group,
  resource/subresource, verb, namespace, resourceNames); a denial is a 403 Status naming the request.
- The namespace's ResourceQuota and LimitRange (``quota.py``): pod admission as the API server
  does it (defaults, request above limit, "failed quota"/"exceeded quota" 403s) and GET by name.
- Pod Security admission from the namespace's ``pod-security.kubernetes.io`` labels
  (``pod_security.py``): a pod breaking the enforce level is a 403 ("violates PodSecurity"); one
  breaking the warn level is created with a ``Warning`` header, kept in ``pod_security_warnings``.
- Pods: create, get, list (label selectors), patch (labels), delete (honouring a ``uid``
  precondition: 409 Conflict for another pod's uid); namespaced (a list or a lookup by name
  sees only the path's namespace); a phase progression
  Pending -> Running -> Succeeded/Failed. The container "runs" by executing the pod's
  ``python -c`` script locally with ``/airflow/xcom`` redirected to a temporary folder (this is
  the simulated part: no container, no image pull); its stdout becomes the pod log.
- The cluster stopping a pod, as the kubelet and API server report it: ``activeDeadlineSeconds``
  counted from ``startTime`` (Failed, DeadlineExceeded), ``evict`` (a spot reclaim on EKS: the
  DisruptionTarget condition, then the pod deleted) and ``shut_down_node`` (GKE spot VMs: Failed,
  Terminated, the pod kept). The script gets SIGTERM, then SIGKILL after ``kill_grace_seconds``
  (1 s here, 30 s by default in Kubernetes); deleting a pod kills it too. No exec into a completed pod.
- pods/log (follow, timestamps, sinceSeconds/sinceTime, tailLines), events list,
  SelfSubjectAccessReview, SelfSubjectReview, /version, and pods/exec over a WebSocket
  (v4/v5.channel.k8s.io) for the XCom sidecar, authorizing get and create as Kubernetes >= 1.30 does.
- Fault injection per test: token age limit (expiry), revoking tokens (401 while the plugin
  still thinks them valid), bursts of 5xx/429, dropped connections and slow responses.

Every request is recorded (method, path, verb, identity, status) for assertions.
"""

from __future__ import annotations

from .server import ApiDouble, Fault

__all__ = ["ApiDouble", "Fault"]
