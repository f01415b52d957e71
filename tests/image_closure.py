"""Only what the image holds: hide every installed package a rendered project's image would lack.

The test venv holds Airflow with *every* provider the template can ask for (cncf-kubernetes,
amazon, google). A rendered project's image holds less: the Astro Runtime (Airflow and the
runtime's own providers) plus the project's requirements.txt. A DAG that imports a provider its
requirements.txt forgot loads fine in the venv and fails in the image; this gate makes it fail
here too.

How: ``install(requirements)`` replaces the ``PathFinder`` in ``sys.meta_path`` with a wrapper
that refuses to import any module whose file belongs to an installed distribution outside
the image's closure (ModuleNotFoundError naming the distribution), and hides those
distributions from ``importlib.metadata`` and its backport ``importlib_metadata``, so Airflow's
ProvidersManager does not see them either. The closure is: RUNTIME + the requirements.txt lines (with their extras), followed
through the installed distributions' own dependencies (markers evaluated, extras honoured).
Modules outside site-packages (the standard library, the project itself) are not affected.

Where it is not the image: markers are evaluated for this venv's Python (3.11), not the image's;
modules that a ``.pth`` file imports at start-up (namespace stubs such as ``google`` and
``google.cloud``, setuptools' ``distutils`` shim) are loaded before the gate. Neither lets a
provider or client library through: their modules are files of outside distributions.

It is switched on by ``sitecustomize.py`` in tests/image_gate/ when the environment names the
project's requirements file in ``KPO_IMAGE_REQUIREMENTS`` (see ``gated_env``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.metadata as md
import json
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

GATE_DIR = Path(__file__).resolve().parent / "image_gate"
# What astrocrpublic.azurecr.io/runtime:3.3-* installs besides Airflow itself, from Astronomer's
# "Astro Runtime provider package reference" (Runtime 3.3-2). Those not in the test venv are simply
# absent here, which only makes the gate stricter. Runtime 3 ships no cncf-kubernetes, amazon or
# google provider (../shared/FACTS.md): a project must add them to requirements.txt.
RUNTIME = (
    "apache-airflow",
    "apache-airflow-providers-celery",
    "apache-airflow-providers-common-compat",
    "apache-airflow-providers-common-io",
    "apache-airflow-providers-common-sql",
    "apache-airflow-providers-elasticsearch",
    "apache-airflow-providers-openlineage",
    "apache-airflow-providers-smtp",
    "apache-airflow-providers-standard",
    "astronomer-providers-logging",
)
# `astro dev pytest` and `astro dev parse` run pytest inside the image, so the runtime has it.
TEST_TOOLS = ("pytest",)


def requirement_lines(requirements: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def closure(roots: list[str]) -> set[str]:
    """Canonical names of the installed distributions the roots pull in (the roots included)."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
    seen: set[str] = set()
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen or name not in installed:
            continue
        seen |= {key, name}
        for text in installed[name].requires or []:
            dep = Requirement(text)
            extras = [""] + sorted(req.extras)
            if dep.marker is None or any(dep.marker.evaluate(default_environment() | {"extra": e}) for e in extras):
                todo.append(dep)
    return {n for n in seen if "[" not in n}


def _site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({os.path.realpath(paths["purelib"]), os.path.realpath(paths["platlib"])})


def outside_files(allowed: set[str]) -> dict[str, str]:
    """Every installed file of a distribution outside ``allowed`` -> that distribution's name."""
    owner: dict[str, str] = {}
    for dist in md.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name not in allowed:
            for file in dist.files or []:
                owner[os.path.realpath(dist.locate_file(file))] = name
    return owner


def cached_gate(requirements: Path) -> tuple[set[str], dict[str, str]]:
    """(allowed, outside files), kept per requirements text and venv state: reading every RECORD
    takes a second or two, and each gated process would otherwise pay it."""
    site = _site_dirs()
    state = [requirements.read_text(), sys.prefix, Path(__file__).read_text(),  # the gate's own code too
             *(str(os.stat(d).st_mtime_ns) for d in site)]
    key = hashlib.sha256("\0".join(state).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "kpo-image-gate" / f"{key}.json"
    try:
        data = json.loads(cache.read_text())
        return set(data["allowed"]), data["outside"]
    except (OSError, ValueError, KeyError):
        pass
    allowed = closure([*RUNTIME, *TEST_TOOLS, *requirement_lines(requirements)])
    outside = outside_files(allowed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({"allowed": sorted(allowed), "outside": outside}))
    partial.replace(cache)  # atomic: parallel processes never read half a file
    return allowed, outside


class ImageFinder:
    """``PathFinder`` as the image would see it: outside packages neither import nor show."""

    def __init__(self, owner: dict[str, str]):
        self.owner = owner

    def find_spec(self, fullname, path=None, target=None):
        """As in the image: not found (None), so `import` raises ModuleNotFoundError and
        `importlib.util.find_spec` answers None, exactly as for a package never installed."""
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        origin = spec.origin if spec is not None else None
        if origin and os.path.realpath(origin) in self.owner:
            return None
        return spec

    @staticmethod
    def invalidate_caches():
        importlib.machinery.PathFinder.invalidate_caches()


def hide_distributions(metadata_module, allowed: set[str]) -> None:
    """Distribution.discover (and so entry points, version(), ...) lists only allowed ones."""
    discover = metadata_module.Distribution.discover.__func__

    def only_allowed(cls, **kwargs):
        return (d for d in discover(cls, **kwargs) if canonicalize_name(d.metadata["Name"] or "") in allowed)

    metadata_module.Distribution.discover = classmethod(only_allowed)


def install(requirements: Path) -> set[str]:
    allowed, outside = cached_gate(requirements)
    if importlib.machinery.PathFinder not in sys.meta_path:
        raise RuntimeError("image gate: no PathFinder in sys.meta_path to replace; nothing would be hidden")
    sys.meta_path[:] = [ImageFinder(outside) if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
    hide_distributions(md, allowed)
    try:  # Airflow reads entry points through the importlib_metadata backport
        import importlib_metadata
    except ImportError:
        pass
    else:
        hide_distributions(importlib_metadata, allowed)
    return allowed


def gated_env(env: dict, requirements: Path) -> dict:
    """``env`` for a subprocess that must see only the image's packages."""
    python_path = [str(GATE_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return env | {"PYTHONPATH": os.pathsep.join(python_path), "KPO_IMAGE_REQUIREMENTS": str(requirements),
                  # pytest would load every installed plugin (xdist, cookies, hypothesis, ...) by
                  # entry point; the image has none of them.
                  "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
