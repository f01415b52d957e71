"""Pod Security admission in the API double, as the API server applies a namespace's
``pod-security.kubernetes.io/{enforce,warn}`` labels (the rendered k8s/namespace.yaml's).

A pod that breaks the ``enforce`` level is refused (403, "violates PodSecurity"); one that breaks
the ``warn`` level is created, and the answer carries a ``Warning`` header ("would violate
PodSecurity"), which the double also keeps in ``pod_security_warnings``. The checks are the
Pod Security Standards' (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
messages in the API server's words, for the fields a KubernetesPodOperator pod can carry.
SIMULATED: the "latest" version of each level only; no exemptions, no ``audit`` level, no
Windows-specific or AppArmor/SELinux/sysctl/procMount checks (no pod here sets them); the
double checks Pod Security before LimitRange (the API server checks LimitRange first), so a pod
refused by both gets the other message first.
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


def _quote(names) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _who(kind: str, names: list[str]) -> str:
    """'container "a"' or 'containers "a", "b"', as the API server words it."""
    return f"{kind}{'s' if len(names) > 1 else ''} {_quote(names)}"


def _context(c: dict) -> dict:
    return c.get("securityContext") or {}


def _capabilities_baseline(containers: list[dict]) -> str | None:
    bad = [c for c in containers if set((_context(c).get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES]
    if not bad:
        return None
    caps = sorted({cap for c in bad for cap in _context(c)["capabilities"]["add"]} - BASELINE_CAPABILITIES)
    return (f"non-default capabilities ({_who('container', [c['name'] for c in bad])} must not include "
            f"{_quote(caps)} in securityContext.capabilities.add)")


def _seccomp_baseline(pod: dict, containers: list[dict]) -> str | None:
    details = []
    if (pod.get("seccompProfile") or {}).get("type") == "Unconfined":
        details.append('pod must not set securityContext.seccompProfile.type to "Unconfined"')
    bad = [c["name"] for c in containers if (_context(c).get("seccompProfile") or {}).get("type") == "Unconfined"]
    if bad:
        details.append(f'{_who("container", bad)} must not set securityContext.seccompProfile.type to "Unconfined"')
    return f"seccompProfile ({'; '.join(details)})" if details else None


def baseline(spec: dict, *, restricted_overrides: bool = False) -> list[str]:
    """What the "baseline" level forbids, one entry per rule broken. restricted_overrides: leave
    out the capabilities and seccomp checks, which "restricted" replaces with its stricter ones."""
    found = []
    pod = spec.get("securityContext") or {}
    containers = _containers(spec)
    hosts = [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    if hosts:
        found.append(f"host namespaces ({', '.join(hosts)})")
    privileged = [c["name"] for c in containers if _context(c).get("privileged")]
    if privileged:
        found.append(f"privileged ({_who('container', privileged)} must not set securityContext.privileged=true)")
    if not restricted_overrides and (message := _capabilities_baseline(containers)):
        found.append(message)
    host_path = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_path:
        found.append(f"hostPath volumes ({_who('volume', host_path)})")
    ports = {c["name"]: [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")] for c in containers}
    ports = {name: numbers for name, numbers in ports.items() if numbers}
    if ports:
        numbers = [n for ns in ports.values() for n in ns]
        verb = "uses" if len(ports) == 1 else "use"
        found.append(f"hostPort ({_who('container', list(ports))} {verb} hostPort{'s' if len(numbers) > 1 else ''} "
                     f"{', '.join(numbers)})")
    if not restricted_overrides and (message := _seccomp_baseline(pod, containers)):
        found.append(message)
    return found


def restricted(spec: dict) -> list[str]:
    """What the "restricted" level forbids: "baseline" (its capabilities and seccomp checks
    replaced by stricter ones, as the API server does) and more."""
    found = baseline(spec, restricted_overrides=True)
    pod = spec.get("securityContext") or {}
    containers = _containers(spec)
    volumes = {v["name"]: sorted(set(v) - {"name"} - RESTRICTED_VOLUMES) for v in spec.get("volumes") or []}
    volumes = {name: kinds for name, kinds in volumes.items() if kinds}
    if volumes:
        kinds = sorted({k for ks in volumes.values() for k in ks})
        verb = "uses" if len(volumes) == 1 else "use"
        found.append(f"restricted volume types ({_who('volume', list(volumes))} {verb} restricted volume "
                     f"type{'s' if len(kinds) > 1 else ''} {_quote(kinds)})")
    escalating = [c["name"] for c in containers if _context(c).get("allowPrivilegeEscalation") is not False]
    if escalating:
        found.append(f"allowPrivilegeEscalation != false ({_who('container', escalating)} must set "
                     "securityContext.allowPrivilegeEscalation=false)")
    details = []
    no_drop = [c["name"] for c in containers if "ALL" not in ((_context(c).get("capabilities") or {}).get("drop") or [])]
    if no_drop:
        details.append(f'{_who("container", no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    added = [c for c in containers if set((_context(c).get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}]
    if added:
        caps = sorted({cap for c in added for cap in _context(c)["capabilities"]["add"]} - {"NET_BIND_SERVICE"})
        details.append(f"{_who('container', [c['name'] for c in added])} must not include {_quote(caps)} "
                       "in securityContext.capabilities.add")
    if details:
        found.append(f"unrestricted capabilities ({'; '.join(details)})")
    details = []
    if pod.get("runAsNonRoot") is False:
        details.append("pod must not set securityContext.runAsNonRoot=false")
    explicit_false = [c["name"] for c in containers if _context(c).get("runAsNonRoot") is False]
    if explicit_false:
        details.append(f"{_who('container', explicit_false)} must not set securityContext.runAsNonRoot=false")
    unset = [c["name"] for c in containers if _context(c).get("runAsNonRoot") is None and pod.get("runAsNonRoot") is not True]
    if unset:
        details.append(f"pod or {_who('container', unset)} must set securityContext.runAsNonRoot=true")
    if details:
        found.append(f"runAsNonRoot != true ({'; '.join(details)})")
    details = ["pod must not set runAsUser=0"] if pod.get("runAsUser") == 0 else []
    root = [c["name"] for c in containers if _context(c).get("runAsUser") == 0]
    if root:
        details.append(f"{_who('container', root)} must not set runAsUser=0")
    if details:
        found.append(f"runAsUser=0 ({'; '.join(details)})")
    details = []
    valid = ("RuntimeDefault", "Localhost")
    pod_type = (pod.get("seccompProfile") or {}).get("type")
    if pod_type is not None and pod_type not in valid:
        details.append(f'pod must not set securityContext.seccompProfile.type to "{pod_type}"')
    bad = [c for c in containers if (_context(c).get("seccompProfile") or {}).get("type") not in (None, *valid)]
    for kind in sorted({_context(c)["seccompProfile"]["type"] for c in bad}):
        names = [c["name"] for c in bad if _context(c)["seccompProfile"]["type"] == kind]
        details.append(f'{_who("container", names)} must not set securityContext.seccompProfile.type to "{kind}"')
    unset = [c["name"] for c in containers if (_context(c).get("seccompProfile") or {}).get("type") is None]
    if unset and pod_type not in valid:
        details.append(f'pod or {_who("container", unset)} must set securityContext.seccompProfile.type to '
                       '"RuntimeDefault" or "Localhost"')
    if details:
        found.append(f"seccompProfile ({'; '.join(details)})")
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
