"""Print what scripts/setup_remote.sh does per cloud and option: commands, changes, seconds.

Figures, not assertions: run with the test environment's Python,
    .venv/bin/python benchmarks/setup_commands.py
Each project is rendered with defaults, the users' own ids of the tests (the script refuses the
template's example ids) and the option shown, then set up against the
recording CLI stand-in of the tests (tests/cloud_cli_double; no cloud is reachable here):
a --dry-run, a first run on a remote side where only the cluster exists, and a second run.
Printed per case: commands the dry run plans (would run), calls the first run makes to the
CLIs and how many of them changed something, calls and changes of the second run, and wall
seconds of each run (dominated by process start-up of the stand-in and python3 lookups).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from cloud_cli_double import CliDouble  # noqa: E402
from test_setup_scripts import OWN, cloud_args, remote_side  # noqa: E402

CASES = [
    ("aws", {}), ("aws", {"pod_operator": "native", "gpu_node_group": True}), ("gcp", {}),
    ("gcp", {"gpu_node_group": True}), ("azure", {}), ("generic", {}),
]


def run(project: Path, double: CliDouble, cloud: str, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(["scripts/setup_remote.sh", *cloud_args(cloud, project), *extra], cwd=project,
                          capture_output=True, text=True, env=double.env(dict(os.environ)))
    return done, time.perf_counter() - started


def main() -> int:
    print(f"{'case':<26} {'planned':>7} {'1st calls':>9} {'1st changes':>11} {'2nd calls':>9} "
          f"{'2nd changes':>11} {'dry s':>6} {'1st s':>6} {'2nd s':>6}")
    for cloud, options in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            out = cookiecutter(str(ROOT), no_input=True, output_dir=tmp, extra_context={"cloud": cloud, **OWN, **options})
            double = CliDouble(Path(tmp) / "double", remote_side(cloud))
            dry, dry_s = run(Path(out), double, cloud, "--dry-run")
            planned = sum(line.startswith("would run:") for line in dry.stdout.splitlines())
            double.reset_log()
            first, first_s = run(Path(out), double, cloud)
            first_calls = double.calls()
            double.reset_log()
            second, second_s = run(Path(out), double, cloud)
            second_calls = double.calls()
            assert dry.returncode == first.returncode == second.returncode == 0, first.stderr + second.stderr
            name = "-".join([cloud, *(k if v is True else v for k, v in options.items())])
            print(f"{name:<26} {planned:>7} {len(first_calls):>9} {sum(c['changed'] for c in first_calls):>11} "
                  f"{len(second_calls):>9} {sum(c['changed'] for c in second_calls):>11} "
                  f"{dry_s:>6.1f} {first_s:>6.1f} {second_s:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
