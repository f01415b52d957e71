"""Run remote_kpo against the API double in deferrable and sync mode and print figures.

Figures, not assertions (the machines are noisy):
    .venv/bin/python benchmarks/remote_kpo_against_double.py [--cloud generic|aws] [--pod-seconds 20]
Prints API requests per task and per minute of pod runtime, time from task start to pod
created, and worker-slot seconds held. The cluster is the test double in tests/kube_api_double.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cookiecutter.main import cookiecutter  # noqa: E402
from e2e_harness import Cluster, migrate, variant  # noqa: E402

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z)")


def when(log: str, marker: str) -> float:
    for line in log.splitlines():
        if marker in line and (match := STAMP.match(line)):
            return dt.datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
    raise ValueError(f"{marker!r} not in the log")


def measure(project: Path, home: Path, work: Path, pod_seconds: float) -> dict:
    with Cluster(project, home, work, double_options={"extra_run_seconds": pod_seconds}) as cluster:
        result = cluster.run("remote_kpo")
        assert result.succeeded, result.log[-3000:]
        log = result.log
        start = when(log, "[DAG TEST] starting task_id=hello_remote")
        end = when(log, "[DAG TEST] end task task_id=hello_remote")
        if "new_state=deferred" in log:
            held = (when(log, "new_state=deferred") - start) + (end - when(log, "[DAG TEST] Trigger completed"))
        else:
            held = end - start
        requests = cluster.double.requests
        created = next(r["t"] for r in requests if r["method"] == "POST" and r["path"].endswith("/pods"))
        pod = next(iter(cluster.double.pods.values()))
        runtime = pod.logs[-1][0] - pod.created
        return {"requests": len(requests), "per_min": len(requests) / runtime * 60, "to_created": created - start,
                "held": held, "task": end - start, "runtime": runtime}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cloud", default="generic", choices=["generic", "aws"])
    parser.add_argument("--pod-seconds", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        home = migrate(tmp / "home")
        project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(tmp / "out"),
                                    extra_context={"cloud": args.cloud, "xcom": True}))
        rows = {"deferrable": measure(project, home, tmp / "d", args.pod_seconds),
                "sync": measure(variant(project, tmp, deferrable=False), home, tmp / "s", args.pod_seconds)}
    print(f"\nremote_kpo against the API double ({args.cloud}, xcom on, pod runs ~{args.pod_seconds:.0f} s)")
    print(f"{'mode':<11}{'API req/task':>13}{'req/min pod':>12}{'start->pod s':>13}{'slot-held s':>12}{'task s':>8}")
    for mode, r in rows.items():
        print(f"{mode:<11}{r['requests']:>13}{r['per_min']:>12.1f}{r['to_created']:>13.2f}{r['held']:>12.1f}{r['task']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
