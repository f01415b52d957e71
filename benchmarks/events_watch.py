"""Events: `list` only, or `list` + `watch`? Figures from remote_kpo against the API double.

Figures, not assertions (the machines are noisy):
    .venv/bin/python benchmarks/events_watch.py [--runs 3] [--pending 0.3 12] [--modes deferrable sync]

Renders the generic project with xcom on and runs remote_kpo in real Airflow against
tests/kube_api_double, once with the rendered Role and once with that Role plus `watch` on
events, for each pod Pending time given (the trigger watches events only while the pod is
Pending). Per task it prints API requests, 403s (each one a "forbidden" entry in the cluster's
audit log), watch and events-list requests, the seconds the watches were held open, whether
the pod's events reached the task log, and the task's wall time: mean (min-max) over the runs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cookiecutter.main import cookiecutter  # noqa: E402
from e2e_harness import Cluster, migrate, variant  # noqa: E402
from remote_kpo_against_double import when  # noqa: E402

EVENT_LOGGED = "Successfully assigned"  # the Scheduled event's message, as the operator logs it


def with_watch(role: dict) -> dict:
    """The Role with `watch` added to its events rule, nothing else changed."""
    role = copy.deepcopy(role)
    (rule,) = [r for r in role["rules"] if r["resources"] == ["events"]]
    rule["verbs"] = sorted({*rule["verbs"], "watch"})
    return role


def measure(project: Path, home: Path, work: Path, role: dict, pending: float) -> dict:
    with Cluster(project, home, work, role=role, double_options={"pending_seconds": pending}) as cluster:
        result = cluster.run("remote_kpo")
        assert result.succeeded, result.log[-3000:]
        requests = cluster.double.requests
        watches = [r for r in requests if r.get("verb") == "watch"]
        return {
            "requests": len(requests),
            "403": sum(r["status"] == 403 for r in requests),
            "watch": len(watches),
            "events list": sum(r.get("verb") == "list" and r.get("resource") == "events" for r in requests),
            "watch open s": sum(r.get("held", 0.0) for r in watches),
            "events logged": float(EVENT_LOGGED in result.log),
            "task s": when(result.log, "[DAG TEST] end task task_id=hello_remote")
            - when(result.log, "[DAG TEST] starting task_id=hello_remote"),
        }


def cell(values: list[float], digits: int) -> str:
    mean = statistics.mean(values)
    if min(values) == max(values):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pending", type=float, nargs="+", default=[0.3, 12.0],
                        help="seconds the pod stays Pending (the double's pending_seconds)")
    parser.add_argument("--modes", nargs="+", default=["deferrable", "sync"], choices=["deferrable", "sync"])
    args = parser.parse_args()
    rows: list[tuple[str, float, str, list[dict]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        home = migrate(tmp / "home")
        project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(tmp / "out"),
                                    extra_context={"cloud": "generic", "xcom": True}))
        rendered = yaml.safe_load((project / "k8s" / "role.yaml").read_text())
        granted = {v for r in rendered["rules"] if r["resources"] == ["events"] for v in r["verbs"]}
        listed = copy.deepcopy(rendered)
        for rule in listed["rules"]:
            if rule["resources"] == ["events"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "watch"]
        roles = {"list": listed, "list+watch": with_watch(rendered)}
        projects = {"deferrable": project, "sync": variant(project, tmp, deferrable=False)}
        n = 0
        for mode in args.modes:
            for pending in args.pending:
                for name, role in roles.items():
                    runs = []
                    for _ in range(args.runs):
                        n += 1
                        runs.append(measure(projects[mode], home, tmp / f"run-{n}", role, pending))
                        print(f"  {mode} pending={pending:g}s {name}: {runs[-1]}", file=sys.stderr)
                    rows.append((mode, pending, name, runs))
    print(f"\nremote_kpo against the API double (generic, xcom on), {args.runs} runs each; "
          f"the rendered Role grants events: {', '.join(sorted(granted))}")
    columns = [("requests", 1), ("403", 1), ("watch", 1), ("events list", 1), ("watch open s", 1),
               ("events logged", 2), ("task s", 1)]
    print(f"{'mode':<11}{'pending s':>10}  {'events verbs':<13}" + "".join(f"{c:>18}" for c, _ in columns))
    for mode, pending, name, runs in rows:
        print(f"{mode:<11}{pending:>10g}  {name:<13}"
              + "".join(f"{cell([r[c] for r in runs], d):>18}" for c, d in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
