"""Print what adding clusters costs: time of the add, the no-op re-add and the remove, files
written, and the DagBag parse time of the project's DAG folder before and after.

Figures, not assertions: run with the test environment's Python,
    .venv/bin/python benchmarks/add_cluster.py [--repeat 5]
The primary is aws (defaults); added: a GKE cluster with the GPU DAG, then a generic one, each
with the real command (`cookiecutter <repo> --directory cluster --no-input ...`) in the project.
Parse times: warm DagBag of the whole dags/ folder, median of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
COOKIECUTTER = str(Path(sys.executable).parent / "cookiecutter")
ADDS = {
    "gke-gpu": ["cloud=gcp", "gpu_node_group=yes", "gcp_project_id=ml-prod-eu"],
    "onprem": ["cloud=generic", "namespace=batch-jobs"],
}
TIMER = r"""
import json, statistics, sys, time
from airflow.dag_processing.dagbag import DagBag
import airflow.providers.cncf.kubernetes.operators.pod  # warm: the provider is shared by all DAGs
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    times.append((time.perf_counter() - t) * 1000)
    assert not bag.import_errors, bag.import_errors
print(json.dumps({"dags": len(bag.dags), "median_ms": statistics.median(times)}))
"""


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def files(project: Path) -> set[str]:
    return {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def parse(project: Path, repeat: int, home: str) -> dict:
    env = dict(os.environ, AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__UNIT_TEST_MODE="True", PYTHONPATH=str(project))
    done = subprocess.run([sys.executable, "-c", TIMER, str(project / "dags"), str(repeat)], env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=tmp, extra_context={"cloud": "aws"}))
        home = str(Path(tmp) / "airflow")
        before = files(project)
        first = parse(project, args.repeat, home)
        print(f"one cluster (aws): {len(before)} files, {first['dags']} DAGs, parse {first['median_ms']:.0f} ms")
        for cluster_id, answers in ADDS.items():
            command = [COOKIECUTTER, "--no-input", str(ROOT), "--directory", "cluster", f"cluster_id={cluster_id}", *answers]
            added = timed(command, project)
            again = timed(command, project)
            print(f"add {cluster_id} ({answers[0]}): {added:.1f} s; the same add again (nothing to change): {again:.1f} s")
        after = files(project)
        multi = parse(project, args.repeat, home)
        print(f"three clusters: {len(after)} files (+{len(after - before)}), {multi['dags']} DAGs, "
              f"parse {multi['median_ms']:.0f} ms")
        for cluster_id in reversed(ADDS):
            took = timed([sys.executable, "clusters/manage.py", "remove", cluster_id], project)
            print(f"remove {cluster_id}: {took:.2f} s")
        left = files(project)
        print(f"after removing both: {len(left)} files; the same file list as before: {left == before}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
