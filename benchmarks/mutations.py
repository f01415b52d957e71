"""Break the template on purpose, one way at a time, and show which test catches each break.

Each mutation is applied to a fresh copy of this repository (the working tree, without
virtualenvs or renders); the tests named for it then run in that copy with this repository's
.venv. A mutation is CAUGHT when those tests fail, and the table says which ones failed. The
original tree is never touched. Figures, not assertions: the script prints a table and exits 1
if any mutation survives.

  .venv/bin/python benchmarks/mutations.py            # all of them (a few minutes)
  .venv/bin/python benchmarks/mutations.py sigv4      # those whose name contains "sigv4"
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "{{cookiecutter.project_slug}}"
RUNNER_POLICY = (f"{TEMPLATE}/aws/{{% if cookiecutter.pod_operator == 'native' or cookiecutter.gpu_node_group %}}"
                 "runner-policy.json{% endif %}")


@dataclass
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: list[str]  # pytest node ids or "file -k expr" selections, run in the copy

    def apply(self, root: Path) -> None:
        target = root / self.path
        text = target.read_text()
        if self.old not in text:
            raise SystemExit(f"mutation {self.name}: {self.old!r} is no longer in {self.path}; update this script")
        target.write_text(text.replace(self.old, self.new))


MUTATIONS = [
    Mutation("trust policy principal hard-coded to the example ARN", f"{TEMPLATE}/aws/trust-policy.json",
             '"AWS": "{{ cookiecutter.aws_astro_workload_identity_arn }}"',
             '"AWS": "arn:aws:iam::111122223333:role/astro-example-deployment"',
             ["tests/test_render.py -k survives or trust_policy"]),
    Mutation("access entry clusterName hard-coded", f"{TEMPLATE}/aws/access-entry.json",
             '"clusterName": "{{ cookiecutter.cluster_name }}"', '"clusterName": "gpu-cluster"',
             ["tests/test_render.py -k survives"]),
    Mutation("RoleBinding namespace hard-coded", f"{TEMPLATE}/k8s/rolebinding.yaml",
             "  namespace: {{ cookiecutter.namespace }}\nsubjects:", "  namespace: airflow-jobs\nsubjects:",
             ["tests/test_render.py -k survives or names_agree"]),
    Mutation("eks_token.sts_url signs for us-east-1 whatever the region",
             f"{TEMPLATE}/include/kube_auth/eks_token.py",
             'return f"https://sts.{region}.{suffix}/', 'return f"https://sts.us-east-1.{suffix}/',
             ["tests/test_eks_token.py"]),
    Mutation("scripts/setup/gcp.sh left unpruned in the other clouds", "cookiecutter.json",
             '"scripts/setup/gcp.sh",\n', "",
             ["tests/test_render.py -k golden"]),
    Mutation("EKS token double: SigV4 comparison disabled", "tests/kube_api_double/auth.py",
             'if not hmac.compare_digest(expected, params.get("X-Amz-Signature", "")):', "if False:",
             ["tests/test_doubles.py"]),
    Mutation("EKS token double: no access entry needed", "tests/kube_api_double/auth.py",
             "        if role_arn not in self.access_entries:\n", "        if False:\n",
             ["tests/test_doubles.py"]),
    Mutation("EKS token double: age not checked", "tests/kube_api_double/auth.py",
             "if time.time() - signed_at.timestamp() > self.max_age:", "if False:",
             ["tests/test_doubles.py"]),
    Mutation("STS double: ExternalId not checked", "tests/kube_api_double/sts.py",
             'if not any(external_id is None or form.get("ExternalId") == external_id for external_id in trusting):',
             "if False:",
             ["tests/test_doubles.py", "tests/test_eks_token.py"]),
    Mutation("Google token double: expiry not checked", "tests/kube_api_double/google.py",
             "if issued.expiry <= time.time():", "if False:", ["tests/test_google_double.py"]),
    Mutation("CLI stand-in: kubectl auth can-i always says yes", "tests/cloud_cli_double/__main__.py",
             "        if not allowed:\n            raise Failed(\"\", 1, out=\"no\")", "",
             ["tests/test_cli_double.py", "tests/test_setup_scripts.py -k permission"]),
    Mutation("CLI stand-in: answers kubectl calls it does not model", "tests/cloud_cli_double/__main__.py",
             'raise Failed(f"cli double: kubectl {\' \'.join(words[:2])} is not simulated", 97)', 'return ""',
             ["tests/test_cli_double.py"]),
    Mutation("rendered README: heading glued to the line before it again", f"{TEMPLATE}/README.md",
             "{%- endif %}\n\n## Deploy", "{% endif -%}\n## Deploy", ["tests/test_readme.py"]),
    Mutation("GKE GPU project without the google provider (the shipped defect)",
             f"{TEMPLATE}/requirements.txt",
             '\n    + (c.gpu_node_group.providers if cookiecutter.gpu_node_group else [])', "",
             ["tests/test_airflow.py::test_dagbag_loads_with_expected_operators[gcp-noxcom-gpu]"]),
    Mutation("DAG checks read the default DAGS_FOLDER again (vacuous green outside the container)",
             f"{TEMPLATE}/tests/dags/test_dag_example.py",
             "return DagBag(dag_folder=DAGS_FOLDER)", "return DagBag()",
             ["tests/test_airflow.py::test_rendered_project_tests_pass[generic-xcom]"]),
    # Production guardrails (issue G).
    Mutation("pods get no activeDeadlineSeconds from execution_timeout", f"{TEMPLATE}/include/remote_pod.py",
             "        if pod.spec.active_deadline_seconds is None and limit:\n", "        if False:\n",
             ["tests/test_e2e_guardrails.py -k follows_execution_timeout"]),
    Mutation("janitor takes a running task's pod for an orphan", f"{TEMPLATE}/include/janitor.py",
             'FINISHED_STATES = frozenset({"success", "failed",', 'FINISHED_STATES = frozenset({"running", "success", "failed",',
             ["tests/test_airflow.py::test_rendered_project_tests_pass[generic-xcom]"]),
    Mutation("API double: quota not enforced", "tests/kube_api_double/quota.py",
             "            if exceeded:\n                raise Refused(403",
             "            if False:\n                raise Refused(403",
             ["tests/test_double_quota.py"]),
    Mutation("API double: a watch authorized as list", "tests/kube_api_double/server.py",
             '            verbs = ["watch"]  # the API server', '            verbs = ["list"]  # the API server',
             ["tests/test_double_watch.py"]),
    Mutation("EKS token cache never re-checks a cached token", f"{TEMPLATE}/include/kube_auth/eks_token.py",
             '    if now - entry["checked"] < recheck_seconds():', "    if True:",
             ["tests/test_eks_token_cache.py -k rejected or recheck or interval or unanswered"]),
    Mutation("setup_remote.sh asks can-i for pods/log as TYPE/NAME again", f"{TEMPLATE}/scripts/setup_remote.sh",
             '    [ "$3" = - ] || CAN_I+=(--subresource "$3")', '    [ "$3" = - ] || CAN_I=(auth can-i "$1" "$2/$3")',
             ["tests/test_setup_scripts.py -k missing_subresource"]),
    Mutation("clusters: sync adds a plugin the project's image already has", "cluster/files/clusters/manage.py",
             """if tool and tool["name"] not in tools and f" /usr/local/bin/{tool['name']} " not in text:""",
             """if tool and tool["name"] not in tools:""",
             ["tests/test_add_cluster.py -k plugin_once or hadolint"]),
    Mutation("clusters: remove leaves the cluster's connection blocks", "cluster/files/clusters/manage.py",
             "    if writer.exists() and subprocess.run(", "    if False and subprocess.run(",
             ["tests/test_add_cluster.py -k restores"]),
    Mutation("clusters: a connection writer rewrites connection.env whole", f"{TEMPLATE}/scripts/write_connection.py",
             '    lines = current.splitlines() or ["# Load', '    lines = [] or ["# Load',
             ["tests/test_cluster_part.py -k replaces_only"]),
    Mutation("clusters: the registry loads added clusters from the primary's package", "cluster/files/clusters/__init__.py",
             'Cluster(name, f"{HERE.name}.{key}.include", key, added=True)', 'Cluster(name, "include", key, added=True)',
             ["tests/test_cluster_dags.py -k one_pod_per_cluster"]),
    Mutation("clusters: the preflight report never fails", "cluster/files/dags/check_remote_clusters.py",
             """            raise AirflowFailException(f"not ready: {'; '.join(not_ready)}")""",
             """            print(f"not ready: {'; '.join(not_ready)}")""",
             ["tests/test_cluster_dags.py -k report_fails"]),
    Mutation("XCom sidecar back to the provider's (no securityContext)", f"{TEMPLATE}/include/remote_pod.py",
             '        kwargs.setdefault("xcom_sidecar_container_security_context", '
             'copy.deepcopy(XCOM_SIDECAR_SECURITY_CONTEXT))\n', "",
             ["tests/test_e2e.py -k remote_kpo_runs and generic-xcom"]),
    Mutation("API double: Pod Security enforce level ignored", "tests/kube_api_double/pod_security.py",
             "        broken = CHECKS[self.enforce](spec)", "        broken = []",
             ["tests/test_double_pod_security.py"]),
    Mutation("API double: TLS handshakes in the accept loop again", "tests/kube_api_double/local.py",
             "        super().__init__(address, handler)\n        self.context = context\n",
             "        super().__init__(address, handler)\n        self.context = context\n"
             "        self.socket = context.wrap_socket(self.socket, server_side=True)\n"
             "        self.finish_request = lambda r, a: ThreadingHTTPServer.finish_request(self, r, a)\n",
             ["tests/test_doubles.py -k silent"]),
    # IAM from the clouds' own tables (issue I, point 3).
    Mutation("GKE GPU role: container.nodePools.* permissions again (IAM has none)",
             f"{TEMPLATE}/gcp/{{% if cookiecutter.gpu_node_group %}}gpu-node-pools-role.yaml{{% endif %}}",
             "  - container.clusters.update\n",
             "  - container.nodePools.create\n  - container.nodePools.delete\n  - container.nodePools.get\n",
             ["tests/test_cloud_permissions.py -k gke_custom_role"]),
    Mutation("GKE GPU role: an unused permission (container.nodes.list)",
             f"{TEMPLATE}/gcp/{{% if cookiecutter.gpu_node_group %}}gpu-node-pools-role.yaml{{% endif %}}",
             "  - container.clusters.update\n", "  - container.clusters.update\n  - container.nodes.list\n",
             ["tests/test_cloud_permissions.py -k gke_custom_role"]),
    Mutation("GKE GPU DAG reads the delete operation (container.operations.get not in the role)",
             f"{TEMPLATE}/include/{{% if cookiecutter.gpu_node_group %}}gpu_nodes.py{{% endif %}}",
             "        client.delete_node_pool(name=NODE_POOL_PATH)\n",
             "        client.get_operation(name=client.delete_node_pool(name=NODE_POOL_PATH).name)\n",
             ["tests/test_cloud_permissions.py -k gke_custom_role"]),
    Mutation("AWS runner policy without eks:DeleteNodegroup",
             RUNNER_POLICY,
             '        "eks:DeleteNodegroup",\n', "",
             ["tests/test_cloud_permissions.py -k aws_runner_policy"]),
    Mutation("AWS runner policy names an action that does not exist",
             RUNNER_POLICY,
             '"Action": "eks:DescribeCluster"', '"Action": ["eks:DescribeCluster", "eks:DescribeNodegroups"]',
             ["tests/test_cloud_permissions.py -k aws_runner_policy"]),
    Mutation("aws.sh calls an aws command that maps to no IAM action", f"{TEMPLATE}/scripts/setup/aws.sh",
             "change aws iam put-role-policy", "change aws iam put-role-policies",
             ["tests/test_cloud_permissions.py -k aws_setup"]),
    Mutation("azure.sh runs an az command missing from the operations map", f"{TEMPLATE}/scripts/setup/azure.sh",
             "change az identity federated-credential create", "change az identity federated-credential update",
             ["tests/test_cloud_permissions.py -k azure_setup"]),
    # Ignore files by the credentials' real names (issue I, point 4).
    Mutation("dockerignore: **/*.crt back (a corporate CA bundle vanishes from the image)", f"{TEMPLATE}/.dockerignore",
             "\ndocker-compose.override.yml\n", "\ndocker-compose.override.yml\n**/*.crt\n",
             ["tests/test_ignore_files.py -k reach_the_image"]),
    Mutation("gitignore: *key*.json back (include/data/keywords.json never committed)", f"{TEMPLATE}/.gitignore",
             "\napplication_default_credentials.json\n", "\napplication_default_credentials.json\n*key*.json\n",
             ["tests/test_ignore_files.py -k reach_git"]),
    Mutation("dockerignore: connection.env no longer ignored (the deployment's token in the image)",
             f"{TEMPLATE}/.dockerignore", "**/connection.env\n", "",
             ["tests/test_ignore_files.py -k out_of_the_image"]),
    Mutation("gitignore: .aws/ no longer ignored", f"{TEMPLATE}/.gitignore", "\n.aws/\n", "\n",
             ["tests/test_ignore_files.py -k out_of_git"]),
    Mutation("project credential scan: PEM private keys no longer recognised",
             f"{TEMPLATE}/tests/test_no_credentials.py", "PRIVATE KEY(?: BLOCK)?-{5}", "PRIVATE KEY(?: BLOCK)?-{6}",
             ["tests/test_ignore_files.py -k warns"]),
    Mutation("project credential scan: its .dockerignore reading drops ! exceptions",
             f"{TEMPLATE}/tests/test_no_credentials.py", "            verdict = exclude\n",
             "            verdict = verdict or exclude\n",
             ["tests/test_ignore_files.py -k agrees_with_docker"]),
    # Quiet before setup, and every Kubernetes call with a timeout (issue I, point 5).
    Mutation("janitor no longer checks for the example connection", f"{TEMPLATE}/include/janitor.py",
             "    if notice := preflight.not_set_up(extra):\n", "    if notice := None:\n",
             ["tests/test_quiet_before_setup.py -k janitor_before_setup_logs"]),
    Mutation("added clusters' janitor reads no connection (the example goes unseen)",
             "cluster/files/dags/remote_pod_janitor_clusters.py",
             "extra = BaseHook.get_connection(found.settings.CONNECTION_ID).extra_dejson", "extra = {}",
             ["tests/test_quiet_before_setup.py -k added_clusters"]),
    Mutation("janitor lists pods without a timeout", f"{TEMPLATE}/include/janitor.py",
             "label_selector=LABEL_SELECTOR,\n                                         _request_timeout=preflight.API_TIMEOUT)",
             "label_selector=LABEL_SELECTOR)",
             ["tests/test_quiet_before_setup.py -k passes_a_timeout"]),
    Mutation("preflight reads the LimitRange without a timeout", f"{TEMPLATE}/include/preflight.py",
             "namespace,\n                                                                     _request_timeout=API_TIMEOUT)",
             "namespace)",
             ["tests/test_quiet_before_setup.py -k passes_a_timeout"]),
    # A team's project, a suite that cannot hang, no leftovers (issue I, points 1, 2, 8, 9).
    Mutation("render keeps the template tree's bytecode and caches", "hooks/post_gen_project.py",
             "    remove_build_leftovers(project)\n    prune(", "    prune(",
             ["tests/test_build_leftovers.py -k leave_no_bytecode"]),
    Mutation("dag.test() runner no longer drops stale defer-exit events", "tests/dag_run.py",
             "            stale.append(key)", "            pass",
             ["tests/test_dag_run.py"]),
    Mutation("the pod-task rules no longer check the namespace", f"{TEMPLATE}/tests/test_remote_setup.py",
             "    if task.namespace != settings.REMOTE_NAMESPACE:", "    if False:",
             ["tests/test_team_dags.py -k breaking_a_rule"]),
    Mutation("every pod task must be deferrable again (only the example promises it)",
             f"{TEMPLATE}/tests/test_remote_setup.py",
             "    broken = [line for t in pod_tasks for line in broken_rules(t)]",
             "    assert all(t.deferrable for t in pod_tasks)\n"
             "    broken = [line for t in pod_tasks for line in broken_rules(t)]",
             ["tests/test_team_dags.py -k own_dags_pass"]),
    Mutation("pool plugin leaves include_deferred off", f"{TEMPLATE}/plugins/remote_kpo_pools.py",
             "            pool.include_deferred = True\n", "            pass\n",
             ["tests/test_e2e_pool.py -k caps_deferred"]),
    Mutation("prompts ask every cloud's questions again", "local_extensions.py",
             '    cloud = answers.get("cloud")\n    if cloud not in clouds:', '    cloud = None\n    if cloud not in clouds:',
             ["tests/test_prompts.py -k only_the_chosen_clouds or only_its_clouds"]),
    Mutation("prompts take a bad answer and refuse it only at the end", "local_extensions.py",
             "                if line is None:\n                    return value", "                return value",
             ["tests/test_prompts.py -k a_bad_answer_again"]),
    Mutation("connection.env written through a symbolic link", f"{TEMPLATE}/scripts/write_connection.py",
             "    if path.is_symlink():\n", "    if False:\n",
             ["tests/test_scripts.py -k never_written_through_a_link"]),
]


def copy_repository(target: Path) -> Path:
    ignore = shutil.ignore_patterns(".venv*", "out", ".git", "__pycache__", ".pytest_cache")
    shutil.copytree(ROOT, target, ignore=ignore)
    return target


def run_tests(root: Path, selection: str) -> tuple[bool, list[str], float]:
    """(failed?, failing test ids, seconds) for one selection like 'tests/x.py -k expr'."""
    path, _, expr = selection.partition(" -k ")
    command = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", path]
    command += ["-k", expr] if expr else []
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    failing = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)  # a collection error counts too
    if done.returncode == 5:
        raise SystemExit(f"{selection!r} selected no test: fix this script")
    return done.returncode != 0, failing, time.perf_counter() - started


def main(args: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not args or any(a.lower() in m.name.lower() for a in args)]
    rows, survived = [], 0
    with tempfile.TemporaryDirectory(prefix="kpo-mutants-") as tmp:
        pristine = copy_repository(Path(tmp) / "pristine")
        for selection in sorted({s for m in chosen for s in m.tests}):
            failed, failing, _ = run_tests(pristine, selection)
            if failed:  # a control: every selection passes on the unbroken template
                raise SystemExit(f"{selection!r} fails on the unbroken template: {failing}")
        for n, mutation in enumerate(chosen):
            mutant = copy_repository(Path(tmp) / f"mutant-{n}")
            mutation.apply(mutant)
            caught, seconds = [], 0.0
            for selection in mutation.tests:
                failed, failing, took = run_tests(mutant, selection)
                seconds += took
                caught += failing if failed else []
            survived += not caught
            names = sorted({c.split("/")[-1] for c in caught})
            shown = f"{len(names)} failed: " + ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            rows.append((mutation.name, shown if names else "SURVIVED", f"{seconds:.0f}"))
            shutil.rmtree(mutant)
    width = max(len(r[0]) for r in rows)
    print(f"{'mutation':{width}}  seconds  caught by")
    for name, caught, seconds in rows:
        print(f"{name:{width}}  {seconds:>7}  {caught}")
    print(f"\n{len(rows) - survived} of {len(rows)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
