"""ResourceQuota and LimitRange in the API double: pod admission as the API server does it, and
GET of the two objects by name. The rest of the double is described in the package docstring.

Real semantics (kube-apiserver 1.33: core/v1 defaulting, the LimitRanger and ResourceQuota
admission plugins, the pod quota evaluator):

- A LimitRange is stored defaulted: in a ``Container`` item, a ``default`` (limit) without a
  ``defaultRequest`` becomes the default request too. GET returns it so.
- Pod create, in this order: a container's missing requests default to its own limits (API
  defaulting); the LimitRanger fills a container's missing limits from ``default`` and missing
  requests from ``defaultRequest`` and names what it set in the ``kubernetes.io/limit-ranger``
  annotation; validation refuses a request above its limit (422 Invalid, "must be less than or
  equal to memory limit of 256Mi"); quota admission refuses with 403 Forbidden a pod with a
  container that lacks a CPU/memory request or limit a quota tracks ("failed quota: <name>: must
  specify limits.memory for: <container>"), and a pod whose usage would take ``used`` over
  ``hard`` ("exceeded quota: <name>, requested: ..., used: ..., limited: ...", naming only the
  exceeded resources, as ``key=value`` sorted by key). Extended resources (``nvidia.com/gpu``) are
  counted as ``requests.<name>`` and never required.
- Usage of a pod: ``pods``/``count/pods`` 1, ``requests.*``/``limits.*`` summed over its
  containers (an init container counts when it asks for more than their sum), bare ``cpu``/
  ``memory``/``ephemeral-storage`` as requests. ``status.used`` counts the live pods that are
  not Succeeded or Failed.
- ``GET /api/v1/namespaces/<ns>/resourcequotas/<name>`` and ``.../limitranges/<name>``, authorized
  as ``get`` on that resource with that name (RBAC rules with ``resourceNames`` apply); 404
  NotFound when absent. The collections (``list``), which a ``resourceNames`` rule never grants.

Simulated: ``status.used`` is computed at every request (a real quota controller fills it in
within seconds of a change, and refuses pods with "status unknown" until it first has); the
objects are given to the double when it starts (no list, watch, create or update over HTTP).
Not modelled, and refused when loading (ValueError) so that no test can lean on a rule the double
does not enforce: LimitRange ``min``, ``max``, ``maxLimitRequestRatio`` and types other than
``Container``; quota ``scopes`` and ``scopeSelector``; pod overhead and pod-level resources.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity

OBJECT_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>resourcequotas|limitranges)(?:/(?P<name>[^/]+))?$")
LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"
TERMINAL = ("Succeeded", "Failed")
# Quota keys for which every container must carry the request or limit (the API server's
# "validationSet", kept for backward compatibility): key -> (requests|limits, resource).
REQUIRED = {"cpu": ("requests", "cpu"), "requests.cpu": ("requests", "cpu"), "memory": ("requests", "memory"),
            "requests.memory": ("requests", "memory"), "limits.cpu": ("limits", "cpu"),
            "limits.memory": ("limits", "memory")}
BINARY = (("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10))


@dataclass
class Refused(Exception):
    """An admission refusal: HTTP code, Status reason and message."""

    code: int
    reason: str
    message: str


def canonical(key: str, value: Decimal) -> str:
    """A quantity as the API server prints it: memory in binary suffixes, CPU in millicores."""
    if value == 0:
        return "0"
    if value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    if key.endswith(("memory", "ephemeral-storage")):
        for suffix, power in BINARY:
            if int(value) % (1 << power) == 0:
                return f"{int(value) >> power}{suffix}"
    return str(int(value))


def pretty(usage: dict[str, Decimal]) -> str:
    return ",".join(f"{key}={canonical(key, usage[key])}" for key in sorted(usage))


def _resources(container: dict) -> tuple[dict, dict]:
    resources = container.setdefault("resources", {})
    return resources.setdefault("requests", {}), resources.setdefault("limits", {})


def container_usage(container: dict) -> dict[str, Decimal]:
    requests, limits = (container.get("resources") or {}).get("requests") or {}, \
        (container.get("resources") or {}).get("limits") or {}
    usage: dict[str, Decimal] = {}
    for resource, value in requests.items():
        usage[f"requests.{resource}"] = parse_quantity(value)
        if resource in ("cpu", "memory", "ephemeral-storage"):
            usage[resource] = parse_quantity(value)
    for resource, value in limits.items():
        if "/" not in resource:  # extended resources are quota'd as requests only
            usage[f"limits.{resource}"] = parse_quantity(value)
    return usage


def pod_usage(pod: dict) -> dict[str, Decimal]:
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for key, value in container_usage(container).items():
            total[key] = total.get(key, Decimal(0)) + value
    for container in spec.get("initContainers") or []:
        for key, value in container_usage(container).items():
            total[key] = max(total.get(key, Decimal(0)), value)
    return {"pods": Decimal(1), "count/pods": Decimal(1), **total}


class NamespaceLimits:
    """The ResourceQuotas and LimitRanges of the double's namespace (see the module docstring)."""

    def __init__(self, namespace: str, docs: list[dict]):
        self.namespace = namespace
        self.quotas: dict[str, dict] = {}
        self.limit_ranges: dict[str, dict] = {}
        for doc in docs:
            meta = doc["metadata"]
            if meta.get("namespace") != namespace:
                raise ValueError(f"{doc['kind']} {meta['name']} is not in namespace {namespace}")
            if doc["kind"] == "ResourceQuota":
                spec = doc.get("spec") or {}
                if spec.get("scopes") or spec.get("scopeSelector"):
                    raise ValueError("quota scopes are not simulated by the API double")
                self.quotas[meta["name"]] = copy.deepcopy(doc)
            elif doc["kind"] == "LimitRange":
                self.limit_ranges[meta["name"]] = self._defaulted(doc)
            else:
                raise ValueError(f"{doc['kind']} is not a namespace limit")

    @staticmethod
    def _defaulted(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        for item in doc["spec"]["limits"]:
            unsupported = {"min", "max", "maxLimitRequestRatio"} & set(item)
            if item.get("type") != "Container" or unsupported:
                raise ValueError(f"LimitRange {item.get('type')} {sorted(unsupported)}: not simulated by the API double")
            item["defaultRequest"] = {**(item.get("default") or {}), **(item.get("defaultRequest") or {})}
        return doc

    # -- admission -------------------------------------------------------------------------
    def admit(self, namespace: str, pod: dict, live_pods: list[dict]) -> None:
        """Mutate ``pod`` as defaulting and the LimitRanger do; raise Refused as validation and
        quota admission do. ``live_pods``: the pods that exist now."""
        if namespace != self.namespace:
            return
        meta = pod.setdefault("metadata", {})
        name = meta.get("name") or meta.get("generateName", "")
        spec = pod.get("spec") or {}
        if spec.get("overhead") or spec.get("resources"):
            raise Refused(400, "BadRequest", "pod overhead and pod-level resources are not simulated by the API double")
        groups = [("container", spec.get("containers") or []), ("init container", spec.get("initContainers") or [])]
        for _, containers in groups:  # requests default to the container's own limits
            for container in containers:
                requests, limits = _resources(container)
                for resource, value in limits.items():
                    requests.setdefault(resource, value)
        set_by_limit_ranger = []
        for limit_range in self.limit_ranges.values():
            default_requests, default_limits = {}, {}
            for item in limit_range["spec"]["limits"]:
                default_requests.update(item.get("defaultRequest") or {})
                default_limits.update(item.get("default") or {})
            for label, containers in groups:
                for container in containers:
                    requests, limits = _resources(container)
                    new_limits = sorted(r for r in default_limits if r not in limits)
                    new_requests = sorted(r for r in default_requests if r not in requests)
                    limits.update({r: default_limits[r] for r in new_limits})
                    requests.update({r: default_requests[r] for r in new_requests})
                    if new_requests:
                        set_by_limit_ranger.append(f"{', '.join(new_requests)} request for {label} {container['name']}")
                    if new_limits:
                        set_by_limit_ranger.append(f"{', '.join(new_limits)} limit for {label} {container['name']}")
        if set_by_limit_ranger:
            meta.setdefault("annotations", {})[LIMIT_RANGER_ANNOTATION] = \
                "LimitRanger plugin set: " + "; ".join(set_by_limit_ranger)
        field = {"container": "containers", "init container": "initContainers"}
        for label, containers in groups:
            for index, container in enumerate(containers):
                requests, limits = _resources(container)
                for resource, value in requests.items():
                    if resource in limits and parse_quantity(value) > parse_quantity(limits[resource]):
                        raise Refused(422, "Invalid", (
                            f'Pod "{name}" is invalid: spec.{field[label]}[{index}].resources.requests[{resource}]: '
                            f'Invalid value: "{value}": must be less than or equal to {resource} limit of {limits[resource]}'))
        self._check_quotas(pod, name, live_pods)

    def _check_quotas(self, pod: dict, name: str, live_pods: list[dict]) -> None:
        containers = [c for key in ("containers", "initContainers") for c in (pod.get("spec") or {}).get(key) or []]
        requested = pod_usage(pod)
        for quota_name, quota in sorted(self.quotas.items()):
            hard = {k: parse_quantity(v) for k, v in (quota["spec"].get("hard") or {}).items()}
            missing: dict[str, list[str]] = {}
            for key in sorted(set(hard) & set(REQUIRED)):
                kind, resource = REQUIRED[key]
                lacking = sorted(c["name"] for c in containers if resource not in _resources(c)[0 if kind == "requests" else 1])
                if lacking:
                    missing[key] = lacking
            if missing:
                what = "; ".join(f"{key} for: {','.join(names)}" for key, names in missing.items())
                raise Refused(403, "Forbidden", f'pods "{name}" is forbidden: failed quota: {quota_name}: must specify {what}')
            used = self.used(hard, live_pods)
            exceeded = sorted(key for key in hard if key in requested and used[key] + requested[key] > hard[key])
            if exceeded:
                raise Refused(403, "Forbidden", (
                    f'pods "{name}" is forbidden: exceeded quota: {quota_name}, '
                    f"requested: {pretty({k: requested[k] for k in exceeded})}, "
                    f"used: {pretty({k: used[k] for k in exceeded})}, limited: {pretty({k: hard[k] for k in exceeded})}"))

    def used(self, hard: dict, live_pods: list[dict]) -> dict[str, Decimal]:
        used = {key: Decimal(0) for key in hard}
        for pod in (p for p in live_pods if p["metadata"].get("namespace") == self.namespace):
            usage = pod_usage(pod)
            charged = (pod.get("status") or {}).get("phase") not in TERMINAL
            for key in hard:
                if charged or key == "count/pods":  # count/pods counts every pod in storage
                    used[key] += usage.get(key, Decimal(0))
        return used

    # -- reads -------------------------------------------------------------------------------
    def read(self, resource: str, name: str, live_pods: list[dict]) -> dict | None:
        if resource == "limitranges":
            return copy.deepcopy(self.limit_ranges.get(name))
        quota = copy.deepcopy(self.quotas.get(name))
        if quota is not None:
            hard = quota["spec"].get("hard") or {}
            used = self.used({k: parse_quantity(v) for k, v in hard.items()}, live_pods)
            quota["status"] = {"hard": {k: canonical(k, parse_quantity(v)) for k, v in hard.items()},
                               "used": {k: canonical(k, v) for k, v in used.items()}}
        return quota


def serve(handler, method: str, match: re.Match, identity, entry: dict) -> int:
    """GET of one ResourceQuota or LimitRange, or of their list, for server._Handler._route."""
    from .server import _status

    namespace, resource, name = match["ns"], match["resource"], match["name"]
    verb = "get" if name else "list"
    entry.update(verb=verb, resource=resource, name=name)
    if method != "GET":
        handler._send(405, _status(405, "MethodNotAllowed", f"{method} {resource} is not simulated by the API double"))
        return 405
    denied = handler._authorize(identity, [verb], resource, None, name, namespace)
    if denied:
        return denied
    double = handler.double
    if name is None:
        names = (double.limits.limit_ranges if resource == "limitranges" else double.limits.quotas) \
            if namespace == double.namespace else {}
        kind = "LimitRangeList" if resource == "limitranges" else "ResourceQuotaList"
        handler._send(200, {"kind": kind, "apiVersion": "v1", "metadata": {},
                            "items": [double.limits.read(resource, n, double.live_pods()) for n in sorted(names)]})
        return 200
    found = double.limits.read(resource, name, double.live_pods()) if namespace == double.namespace else None
    if found is None:
        handler._send(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
        return 404
    found.setdefault("apiVersion", "v1")
    handler._send(200, found)
    return 200
