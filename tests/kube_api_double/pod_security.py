"""Pod Security admission in the API double, as the API server applies a namespace's
``pod-security.kubernetes.io/{enforce,warn}`` labels (the rendered k8s/namespace.yaml's).

A pod that breaks the ``enforce`` level is refused (403, "violates PodSecurity"); one that breaks
the ``warn`` level is created, and the answer carries a ``Warning`` header ("would violate
PodSecurity"), which the double also keeps in ``pod_security_warnings``. The checks are the
Pod Security Standards' (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
messages in the API server's words, for the fields a KubernetesPodOperator pod can carry.
SIMULATED: the "latest" version of each level only; no exemptions, no ``audit`` level, no
Windows-specific or AppArmor/SELinux/sysctl/procMount checks (no pod here sets them).
"""

from __future__ import annotations

from .quota import Refused

LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def _containers(spec: dict) -> list[dict]:
    return [c for field in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(field) or []]


def _names(containers: list[dict]) -> str:
    quoted = ", ".join(f'"{c["name"]}"' for c in containers)
    return f"container{'s' if len(containers) > 1 else ''} {quoted}"


def baseline(spec: dict) -> list[str]:
    """What the "baseline" level forbids, one entry per rule broken."""
    found = []
    hosts = [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    if hosts:
        found.append(f"host namespaces ({', '.join(hosts)})")
    containers = _containers(spec)
    privileged = [c for c in containers if (c.get("securityContext") or {}).get("privileged")]
    if privileged:
        found.append(f"privileged ({_names(privileged)} must not set securityContext.privileged=true)")
    added = [c for c in containers
             if set(((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES]
    if added:
        found.append(f"non-default capabilities ({_names(added)} must not include capabilities beyond the default set)")
    host_path = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_path:
        found.append(f"hostPath volumes (volumes {', '.join(repr(n) for n in host_path)})")
    ports = [c for c in containers if any(p.get("hostPort") for p in c.get("ports") or [])]
    if ports:
        found.append(f"hostPort ({_names(ports)} uses hostPort)")
    return found


def restricted(spec: dict) -> list[str]:
    """What the "restricted" level forbids beyond "baseline"."""
    found = baseline(spec)
    pod = spec.get("securityContext") or {}
    containers = _containers(spec)

    def context(c: dict) -> dict:
        return c.get("securityContext") or {}

    volumes = [v["name"] for v in spec.get("volumes") or [] if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    if volumes:
        found.append(f"restricted volume types (volumes {', '.join(repr(n) for n in volumes)})")
    escalating = [c for c in containers if context(c).get("allowPrivilegeEscalation") is not False]
    if escalating:
        found.append(f"allowPrivilegeEscalation != false ({_names(escalating)} must set "
                     "securityContext.allowPrivilegeEscalation=false)")
    unrestricted = [c for c in containers
                    if "ALL" not in ((context(c).get("capabilities") or {}).get("drop") or [])
                    or set((context(c).get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}]
    if unrestricted:
        found.append(f'unrestricted capabilities ({_names(unrestricted)} must set securityContext.capabilities.drop=["ALL"])')
    root = [c for c in containers if context(c).get("runAsNonRoot") is False
            or (context(c).get("runAsNonRoot") is None and pod.get("runAsNonRoot") is not True)]
    if root:
        found.append(f"runAsNonRoot != true (pod or {_names(root)} must set securityContext.runAsNonRoot=true)")
    uid0 = [c for c in containers if context(c).get("runAsUser", pod.get("runAsUser")) == 0]
    if uid0:
        found.append(f"runAsUser=0 (pod or {_names(uid0)} must not set runAsUser=0)")
    unconfined = [c for c in containers
                  if ((context(c).get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
                      not in ("RuntimeDefault", "Localhost"))]
    if unconfined:
        found.append(f"seccompProfile (pod or {_names(unconfined)} must set securityContext.seccompProfile.type to "
                     '"RuntimeDefault" or "Localhost")')
    return found


CHECKS = {"privileged": lambda spec: [], "baseline": baseline, "restricted": restricted}


class PodSecurity:
    """The levels one namespace's labels set; ``admit`` refuses or warns as the API server does."""

    def __init__(self, labels: dict[str, str] | None = None):
        labels = labels or {}
        self.enforce = labels.get("pod-security.kubernetes.io/enforce", "privileged")
        self.warn = labels.get("pod-security.kubernetes.io/warn", "privileged")
        assert {self.enforce, self.warn} <= set(LEVELS), (self.enforce, self.warn)

    def admit(self, pod: dict) -> list[str]:
        """Raise Refused for a pod the enforce level forbids; return the warn level's warnings."""
        name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName", "")
        spec = pod.get("spec") or {}
        broken = CHECKS[self.enforce](spec)
        if broken:
            raise Refused(403, "Forbidden", f'pods "{name}" is forbidden: violates PodSecurity '
                                            f'"{self.enforce}:latest": {", ".join(broken)}')
        broken = CHECKS[self.warn](spec)
        return [f'would violate PodSecurity "{self.warn}:latest": {", ".join(broken)}'] if broken else []
