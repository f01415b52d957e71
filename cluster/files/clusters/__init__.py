"""This project's remote clusters by name: the one it was rendered for (include/) and every cluster
added with `cookiecutter <template> --directory cluster` (clusters/<package>/).

DAGs pick a cluster by its name and get the pod operator, connection, namespace and pool of that
cluster, whatever its cloud or operator:

    from clusters import RemotePod, cluster, cluster_args, names

    RemotePod("gke-gpu", task_id="train", name="train", image="...")  # pool: the cluster's own
    MyOperator(task_id="x", **cluster_args("gke-gpu"))                # CLUSTER_ARGS of that cluster
    for name in names(): ...                                          # the primary first, then the added ones
    cluster("gke-gpu").settings.REMOTE_NAMESPACE                      # its include/remote_cluster.py

The primary cluster is named by CLUSTER_NAME in include/remote_cluster.py, an added one by the
cluster_id it was added with (clusters/<package>/cluster.json). `python3 clusters/manage.py list`
prints them. Looking clusters up reads only those small files; a cluster's modules (and its
cloud's provider) are imported when first used.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["Cluster", "RemotePod", "cluster", "cluster_args", "names"]

HERE = Path(__file__).resolve().parent
PRIMARY_PACKAGE = "include"


@dataclass(frozen=True)
class Cluster:
    """One remote cluster: its settings module and what DAGs start pods and clients with."""

    name: str  # what DAGs pass: the primary's CLUSTER_NAME or an added cluster's cluster_id
    package: str  # where its modules live: "include" or "clusters.<key>.include"
    key: str  # Python- and task_id-safe form of the name ("gke_gpu")
    added: bool  # False for the primary (include/), True for clusters/<key>/

    def module(self, name: str) -> ModuleType:
        """One of the cluster's include/ modules, e.g. module("gpu_nodes")."""
        return importlib.import_module(f"{self.package}.{name}")

    @property
    def settings(self) -> ModuleType:
        """Its include/remote_cluster.py: CLOUD, CONNECTION_ID, REMOTE_NAMESPACE, XCOM_ENABLED, ..."""
        return self.module("remote_cluster")

    @property
    def operator(self) -> type:
        """Its RemotePodOperator (a KubernetesPodOperator, EksPodOperator or GKEStartPodOperator)."""
        return self.module("remote_pod").RemotePodOperator

    @property
    def args(self) -> dict[str, Any]:
        """Its CLUSTER_ARGS: connection, namespace (and cluster, region/location for native operators)."""
        return dict(self.module("remote_pod").CLUSTER_ARGS)

    @property
    def pool(self) -> str:
        return self.settings.REMOTE_POOL

    @property
    def native(self) -> bool:
        """True when pods start with the cloud's own operator and connection (no kubeconfig)."""
        return self.settings.POD_OPERATOR == "native"

    @property
    def xcom(self) -> bool:
        return bool(self.settings.XCOM_ENABLED)

    @property
    def preflight(self) -> ModuleType:
        return self.module("preflight")

    @property
    def janitor(self) -> ModuleType:
        return self.module("janitor")

    def api_client(self):
        """A context manager yielding a kubernetes ApiClient signed in as its pods are."""
        return self.module("kube_client").api_client()

    @property
    def pod_name_arg(self) -> str:
        """The operator's argument for the pod's name: EksPodOperator calls it pod_name."""
        for klass in self.operator.__mro__:
            init = vars(klass).get("__init__")
            if init is not None and "pod_name" in inspect.signature(init).parameters:
                return "pod_name"
        return "name"


def safe_key(name: str) -> str:
    return re.sub(r"\W", "_", name, flags=re.ASCII)


@functools.cache
def _registry() -> dict[str, Cluster]:
    primary_settings = importlib.import_module(f"{PRIMARY_PACKAGE}.remote_cluster")
    found: dict[str, Cluster] = {}
    for path in sorted(HERE.glob("*/cluster.json")):
        try:
            name = json.loads(path.read_text())["answers"]["cluster_id"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: no answers.cluster_id ({err.__class__.__name__}: {err})") from None
        key = path.parent.name
        found[name] = Cluster(name, f"{HERE.name}.{key}.include", key, added=True)
    primary_name = primary_settings.CLUSTER_NAME
    if primary_name in found:
        raise ValueError(f"cluster {primary_name!r} is both the primary and clusters/{found[primary_name].key}")
    primary_key = safe_key(primary_name)
    if primary_key in {c.key for c in found.values()}:  # task ids and group ids must stay unique
        primary_key = f"{primary_key}_primary"
    primary = Cluster(primary_name, PRIMARY_PACKAGE, primary_key, added=False)
    return {primary_name: primary} | dict(sorted(found.items()))


def names() -> list[str]:
    """Every cluster's name: the primary first, then the added ones in name order."""
    return list(_registry())


def cluster(name: str) -> Cluster:
    """The cluster called ``name``; ValueError naming the known ones otherwise."""
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(f"unknown cluster {name!r}; this project has: {', '.join(names())}") from None


def cluster_args(name: str) -> dict[str, Any]:
    """CLUSTER_ARGS of that cluster: pass them to its operator (``cluster(name).operator``)."""
    return cluster(name).args


def RemotePod(cluster_name: str, /, **kwargs: Any):
    """That cluster's RemotePodOperator with its CLUSTER_ARGS and pool; ``name=`` is the pod's
    name on every cloud (passed as pod_name to EksPodOperator). Other keyword arguments are the
    operator's own and override CLUSTER_ARGS."""
    found = cluster(cluster_name)
    if "name" in kwargs and found.pod_name_arg != "name":
        kwargs[found.pod_name_arg] = kwargs.pop("name")
    kwargs.setdefault("pool", found.pool)
    return found.operator(**{**found.args, **kwargs})
