"""Print the DagBag parse time of every rendered DAG next to a minimal one-task KPO DAG.

Figures, not assertions: run with the test environment's Python,
    .venv/bin/python benchmarks/parse_dags.py [--repeat 7]
Each cloud is rendered with defaults (xcom on). Airflow and the provider are imported before
timing, so the figures are the DAG file's own cost, as the DAG processor sees it warm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = '''
from datetime import datetime
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag

@dag(schedule=None, start_date=datetime(2025, 1, 1), tags=["x"], default_args={"retries": 2})
def minimal_kpo():
    KubernetesPodOperator(task_id="t", image="busybox", in_cluster=False, kubernetes_conn_id="k")

minimal_kpo()
'''
TIMER = r"""
import json, statistics, sys, time
from airflow.dag_processing.dagbag import DagBag
import airflow.providers.cncf.kubernetes.operators.pod  # warm: imports are shared by all DAGs
import kubernetes.client
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    times.append((time.perf_counter() - t) * 1000)
    assert not bag.import_errors, bag.import_errors
print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times)}))
"""


def parse_time(path: Path, project: Path, repeat: int, home: str) -> dict:
    env = dict(os.environ, AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__UNIT_TEST_MODE="True", PYTHONPATH=str(project))
    done = subprocess.run([sys.executable, "-c", TIMER, str(path), str(repeat)], capture_output=True,
                          text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        minimal = Path(tmp) / "minimal" / "minimal_kpo.py"
        minimal.parent.mkdir()
        minimal.write_text(MINIMAL)
        rows.append(("(baseline)", "minimal_kpo.py", parse_time(minimal, minimal.parent, args.repeat, tmp)))
        for cloud in json.loads((ROOT / "cookiecutter.json").read_text())["cloud"]:
            project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(Path(tmp) / cloud),
                                        extra_context={"cloud": cloud}))
            for dag_file in sorted((project / "dags").glob("*.py")):
                rows.append((cloud, dag_file.name, parse_time(dag_file, project, args.repeat, tmp)))
    print(f"\nDagBag parse time per DAG file (warm imports, {args.repeat} runs)")
    print(f"{'cloud':<11} {'dag file':<24} {'median ms':>10} {'min ms':>8}")
    for cloud, name, t in rows:
        print(f"{cloud:<11} {name:<24} {t['median_ms']:>10.1f} {t['min_ms']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
