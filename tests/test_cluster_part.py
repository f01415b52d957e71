"""The main template rendered as a cluster part (``_cluster_id`` set, as the cluster/ template's add
hook renders it into clusters/<pkg>/), and the one-cluster render it must leave as it was.

Real: cookiecutter, the rendered scripts and the files they write, the Python imports (under the
image gate), ruff. SIMULATED: kubectl, a stand-in printing a kubeconfig view and a token.
The project layouts are assembled here the way the add hook places a part (clusters/<pkg>/ and
the GPU DAG in dags/); the add hook itself is tested with the cluster/ template.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG, ROOT, airflow_env

BIN = Path(sys.executable).parent
GPU_DAG = "dags/remote_kpo_gpu.py"
PRIMARY = {"cloud": "aws", "xcom": True, "gpu_node_group": True}


def part_answers(cluster_id: str, cloud: str, **answers) -> dict:
    """The answers the add hook passes for an added cluster of the default project (slug remote_kpo)."""
    pkg, slug = cluster_id.replace("-", "_"), "remote-kpo"
    found = {"_cluster_id": cluster_id, "project_slug": "remote_kpo", "cloud": cloud, "cluster_name": cluster_id,
             "kubernetes_conn_id": f"remote_kubernetes_{pkg}", **answers}
    if cloud == "aws":
        found |= {"__aws_role_name": f"{slug}-{cluster_id}-kpo-runner", "__aws_external_id": f"{slug}-{cluster_id}-remote-kpo",
                  "__k8s_group": f"airflow-kpo-runners-{cluster_id}",
                  "__aws_gpu_node_role_name": f"{slug}-{cluster_id}-gpu-node"}
    return found


PARTS = {
    "eks-two": part_answers("eks-two", "aws", gpu_node_group=True),
    "eks-native": part_answers("eks-native", "aws", pod_operator="native"),
    "gke-gpu": part_answers("gke-gpu", "gcp", gpu_node_group=True, xcom=False),
    "aks-one": part_answers("aks-one", "azure"),
    "sa-two": part_answers("sa-two", "generic"),
}


def load(path: Path):
    """A rendered module by its path (include/remote_cluster.py needs no other module)."""
    spec = importlib.util.spec_from_file_location(f"part_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.parametrize("cluster_id", list(PARTS))
def test_a_cluster_part_carries_its_own_names(render, cluster_id):
    answers, pkg = PARTS[cluster_id], cluster_id.replace("-", "_")
    part = render(answers).path
    rc = load(part / "include/remote_cluster.py")
    assert (rc.CLUSTER_ID, rc.REMOTE_POOL, rc.CONNECTION_ID) == (cluster_id, f"remote_kpo_{pkg}", f"remote_kubernetes_{pkg}")
    # The add hook writes the connection into the project root: the part's own hook writes none.
    assert not (part / "airflow_settings.yaml").exists() and not (part / "connection.env").exists()
    for module in ("janitor", "kube_client", "preflight", "remote_pod"):
        assert "from include" not in (part / "include" / f"{module}.py").read_text(), module
    writer = (part / "scripts/write_connection.py").read_text()
    assert f'WRITER = "clusters/{pkg}/scripts/write_connection.py"' in writer
    if answers.get("gpu_node_group"):
        dag = (part / GPU_DAG).read_text()
        assert f"from clusters.{pkg}.include import gpu_nodes" in dag
        assert f"from clusters.{pkg}.include.remote_pod import" in dag and "from include" not in dag
        assert f'dag_id="remote_kpo_gpu_{pkg}"' in dag
    if rc.CLOUD == "aws" and rc.EXEC_PLUGIN:
        assert rc.EXEC_PLUGIN["args"][0] == f"/usr/local/airflow/clusters/{pkg}/include/kube_auth/eks_token.py"
    done = run(BIN / "ruff", "check", "--no-cache", "--isolated", "--target-version", "py312", "--line-length", "130",
               "--select", "E,F,W,B,UP,AIR", "--preview", part)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_private_overrides_reach_the_identity_files(render):
    """cookiecutter 2.7 applies extra_context to the __ keys: the add hook's names win."""
    part = render(PARTS["eks-two"]).path
    trust = json.loads((part / "aws/trust-policy.json").read_text())
    assert json.dumps(trust).count('"sts:ExternalId": "remote-kpo-eks-two-remote-kpo"') == 1
    entry = json.loads((part / "aws/access-entry.json").read_text())
    assert entry["principalArn"].endswith(":role/remote-kpo-eks-two-kpo-runner")
    assert entry["kubernetesGroups"] == ["airflow-kpo-runners-eks-two"]
    binding = yaml.safe_load((part / "k8s/rolebinding.yaml").read_text())
    assert [s["name"] for s in binding["subjects"]] == ["airflow-kpo-runners-eks-two"]
    rc = load(part / "include/remote_cluster.py")
    assert rc.RUNNER_ROLE_NAME == "remote-kpo-eks-two-kpo-runner" and rc.GPU_NODE_ROLE_NAME == "remote-kpo-eks-two-gpu-node"
    assert "remote-kpo-eks-two-gpu-node" in (part / "aws/runner-policy.json").read_text()
    everything = "\n".join(p.read_text() for p in part.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for default in ("remote-kpo-kpo-runner", "remote-kpo-remote-kpo", "remote-kpo-gpu-node", '"airflow-kpo-runners"'):
        assert default not in everything, default


def test_the_post_gen_hook_writes_and_prints_nothing_for_a_cluster_part(tmp_path):
    done = run(sys.executable, "-m", "cookiecutter", "--no-input", "-o", tmp_path, ROOT, "_cluster_id=gke-gpu", "cloud=gcp",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""
    assert not (tmp_path / "remote_kpo/airflow_settings.yaml").exists()


# -- a project with added clusters, assembled as the add hook places them ------------------------
def assemble(render, tmp_path: Path, *cluster_ids: str) -> Path:
    project = tmp_path / "project"
    shutil.copytree(render(PRIMARY).path, project)
    requirements = (project / "requirements.txt").read_text().splitlines()
    for cluster_id in cluster_ids:
        pkg, part = cluster_id.replace("-", "_"), render(PARTS[cluster_id]).path
        shutil.copytree(part, project / "clusters" / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        if (part / GPU_DAG).exists():
            shutil.copy(part / GPU_DAG, project / f"dags/remote_kpo_gpu_{pkg}.py")
        requirements += [line for line in (part / "requirements.txt").read_text().splitlines() if line not in requirements]
    (project / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return project


IMPORTS = """
import importlib, json
from airflow.dag_processing.dagbag import DagBag
found = {}
for package in ("include", "clusters.eks_two.include", "clusters.gke_gpu.include"):
    for name in ("remote_cluster", "remote_pod", "kube_client", "preflight", "janitor", "gpu_nodes"):
        importlib.import_module(f"{package}.{name}")
    rc = importlib.import_module(f"{package}.remote_cluster")
    pod = importlib.import_module(f"{package}.remote_pod")
    preflight = importlib.import_module(f"{package}.preflight")
    args = pod.CLUSTER_ARGS
    found[package] = {"pool": rc.REMOTE_POOL, "conn": args.get("kubernetes_conn_id") or args.get("gcp_conn_id"),
                      "same_rc": preflight.rc is rc, "fix": str(preflight.PreflightError(preflight.FIX_RBAC))}
bag = DagBag(dag_folder="dags")
found["errors"] = {path: str(err)[-500:] for path, err in bag.import_errors.items()}
found["dags"] = {dag_id: [bag.dag_folder and dag.fileloc.rsplit("/", 1)[1], sorted({t.pool for t in dag.tasks})]
                 for dag_id, dag in bag.dags.items()}
print(json.dumps(found))
"""


def test_cluster_modules_import_beside_the_primarys(render, tmp_path):
    project = assemble(render, tmp_path, "eks-two", "gke-gpu")
    done = run(sys.executable, "-c", IMPORTS, cwd=project, env=airflow_env(project, tmp_path / "home"))
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["include"]["pool"] == "remote_kpo" and found["include"]["conn"] == "remote_kubernetes"
    for pkg in ("eks_two", "gke_gpu"):
        mine = found[f"clusters.{pkg}.include"]
        assert mine["pool"] == f"remote_kpo_{pkg}" and mine["conn"] == f"remote_kubernetes_{pkg}"
        assert mine["same_rc"], "the part's preflight reads the part's remote_cluster, not the primary's"
        assert mine["fix"] == (f"run clusters/{pkg}/scripts/setup_remote.sh, or kubectl apply -f clusters/{pkg}/k8s/ "
                               "as a cluster admin")
        assert found["dags"][f"remote_kpo_gpu_{pkg}"][0] == f"remote_kpo_gpu_{pkg}.py"
        assert f"remote_kpo_{pkg}" in found["dags"][f"remote_kpo_gpu_{pkg}"][1], "its pod runs in its cluster's pool"
    assert found["include"]["fix"] == "run scripts/setup_remote.sh, or kubectl apply -f k8s/ as a cluster admin"
    assert found["errors"] == {}
    assert found["dags"]["remote_kpo_gpu"][0] == "remote_kpo_gpu.py" and "remote_kpo" in found["dags"]["remote_kpo_gpu"][1]


# -- the connection files: every writer changes its own part only -------------------------------
CA = "Q0E="
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl"
KUBECTL = """#!{python}
import json, sys
if "token" in sys.argv:
    print({token!r})
else:
    cluster = {{"server": {server!r}, "certificate-authority-data": "Q0E="}}
    print(json.dumps({{"clusters": [{{"name": "c", "cluster": cluster}}]}}))
"""


def writer(project: Path, where: str, *args: str, server: str = "https://198.51.100.7:6443") -> subprocess.CompletedProcess:
    """Run a write_connection.py (`where`: "" for the project's, "clusters/<pkg>/" for a part's)."""
    bin_dir = project.parent / f"bin-{abs(hash(server))}"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "kubectl").write_text(KUBECTL.format(python=sys.executable, token=TOKEN, server=server))
        (bin_dir / "kubectl").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    done = run(sys.executable, f"{where}scripts/write_connection.py", *args, cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def settings(project: Path) -> dict:
    parsed = yaml.safe_load((project / "airflow_settings.yaml").read_text())
    assert list(parsed) == ["airflow"] and list(parsed["airflow"]) == ["connections", "pools", "variables"]
    assert parsed["airflow"]["variables"] == []
    return parsed["airflow"]


def env_lines(project: Path) -> dict[str, str]:
    path = project / "connection.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return {line.split("=", 1)[0]: line for line in path.read_text().splitlines() if "=" in line}


def test_placeholders_add_one_block_each_and_removal_restores_the_files(render, tmp_path):
    project = assemble(render, tmp_path, "gke-gpu", "sa-two")
    rendered = (project / "airflow_settings.yaml").read_text()
    writer(project, "clusters/gke_gpu/", "--placeholder")
    once = (project / "airflow_settings.yaml").read_text()
    writer(project, "clusters/gke_gpu/", "--placeholder")
    assert (project / "airflow_settings.yaml").read_text() == once, "a second run changes nothing"
    writer(project, "clusters/sa_two/", "--placeholder")
    text = (project / "airflow_settings.yaml").read_text()
    assert text.startswith(rendered.split("  pools:")[0]), "the primary's block is untouched"
    marker = "written by clusters/gke_gpu/scripts/write_connection.py >>>"
    assert f"    # >>> remote cluster connection remote_kubernetes_gke_gpu: {marker}" in text.splitlines()
    assert "    # <<< remote cluster connection remote_kubernetes_gke_gpu <<<" in text.splitlines()
    assert f"    # >>> remote cluster pool remote_kpo_gke_gpu: {marker}" in text.splitlines()
    parsed = settings(project)
    assert [c["conn_id"] for c in parsed["connections"]] == [
        "remote_kubernetes", "remote_kubernetes_aws", "remote_kubernetes_gke_gpu", "remote_kubernetes_gke_gpu_gcp",
        "remote_kubernetes_sa_two"]
    caps = "Caps concurrent pods on the remote cluster"
    assert parsed["pools"] == [
        {"pool_name": "remote_kpo", "pool_slot": 4, "pool_description": f"{caps} gpu-cluster"},
        {"pool_name": "remote_kpo_gke_gpu", "pool_slot": 4, "pool_description": f"{caps} gke-gpu"},
        {"pool_name": "remote_kpo_sa_two", "pool_slot": 4, "pool_description": f"{caps} sa-two"}]
    assert stat.S_IMODE((project / "airflow_settings.yaml").stat().st_mode) == 0o600

    done = writer(project, "clusters/gke_gpu/", "--remove")
    assert done.stdout.splitlines() == ["removed airflow_settings.yaml: pool remote_kpo_gke_gpu",
                                        "removed airflow_settings.yaml: connection remote_kubernetes_gke_gpu"]
    assert [c["conn_id"] for c in settings(project)["connections"]][-1] == "remote_kubernetes_sa_two"
    writer(project, "clusters/sa_two/", "--remove")
    assert (project / "airflow_settings.yaml").read_text() == rendered, "removing the last restores the file byte for byte"
    again = writer(project, "clusters/sa_two/", "--remove")
    assert again.stdout.strip() == "nothing of cluster sa-two in airflow_settings.yaml or connection.env"


@pytest.mark.parametrize("first", ["primary", "part"])
def test_each_writer_replaces_only_its_own_lines(render, tmp_path, first):
    project = assemble(render, tmp_path, "gke-gpu", "sa-two")
    (project / "connection.env").write_text("# mine\nMY_OWN=kept\n")
    (project / "connection.env").chmod(0o600)  # as the writer makes it; it keeps the mode of a file it finds
    runs = {"primary": lambda server: writer(project, "", "--kubeconfig", "k", server=server),
            "part": lambda server: writer(project, "clusters/sa_two/", "--kubeconfig", "k", server=server)}
    second = "part" if first == "primary" else "primary"
    runs[first]("https://first.example:6443")
    before = env_lines(project)
    done = runs[second]("https://second.example:6443")
    after = env_lines(project)
    assert {k: v for k, v in after.items() if k in before} == before, "the earlier writer's lines are kept as they were"
    assert set(after) == {"MY_OWN", "AIRFLOW_CONN_REMOTE_KUBERNETES", "AIRFLOW_CONN_REMOTE_KUBERNETES_AWS",
                          "AIRFLOW_CONN_REMOTE_KUBERNETES_SA_TWO"}
    assert (project / "connection.env").read_text().startswith("# mine\nMY_OWN=kept\n")
    servers = {c["conn_id"]: c["conn_extra"].get("kube_config", {}).get("clusters", [{}])[0].get("cluster", {}).get("server")
               for c in settings(project)["connections"]}
    assert servers["remote_kubernetes" if first == "primary" else "remote_kubernetes_sa_two"] == "https://first.example:6443"
    assert servers["remote_kubernetes_sa_two" if first == "primary" else "remote_kubernetes"] == "https://second.example:6443"
    if second == "part":
        assert "check_remote_clusters" in done.stdout.splitlines()[-1]
    # Rerunning either writer replaces its lines in place: same file.
    text = (project / "connection.env").read_text()
    runs[first]("https://first.example:6443")
    runs[second]("https://second.example:6443")
    assert (project / "connection.env").read_text() == text
    # Removing the part leaves the primary's lines and the user's own.
    writer(project, "clusters/sa_two/", "--remove")
    assert set(env_lines(project)) == {"MY_OWN", "AIRFLOW_CONN_REMOTE_KUBERNETES", "AIRFLOW_CONN_REMOTE_KUBERNETES_AWS"}
    assert [c["conn_id"] for c in settings(project)["connections"]] == ["remote_kubernetes", "remote_kubernetes_aws"]


def test_a_part_writer_makes_missing_root_settings_with_the_primarys_block(render, tmp_path):
    project = assemble(render, tmp_path, "gke-gpu")
    (project / "airflow_settings.yaml").unlink()
    writer(project, "clusters/gke_gpu/", "--placeholder")
    parsed = settings(project)
    assert [c["conn_id"] for c in parsed["connections"]][0] == "remote_kubernetes"
    assert [p["pool_name"] for p in parsed["pools"]] == ["remote_kpo", "remote_kpo_gke_gpu"]
    # The primary's writer then finds its block and keeps the part's.
    writer(project, "", "--placeholder")
    assert [p["pool_name"] for p in settings(project)["pools"]] == ["remote_kpo", "remote_kpo_gke_gpu"]
    assert "remote_kubernetes_gke_gpu" in [c["conn_id"] for c in settings(project)["connections"]]


# -- the one-cluster render: as before ---------------------------------------------------------
@pytest.mark.parametrize("answers", [PRIMARY, {"cloud": "gcp", "xcom": False, "gpu_node_group": True},
                                     {"cloud": "generic", "xcom": True}], ids=["aws-gpu", "gcp-gpu", "generic"])
def test_a_one_cluster_render_has_no_cluster_part_in_it(render, answers):
    project = render(answers).path
    for path in project.rglob("*"):
        # deploy.sh is copied as is: the same file in every project, looking for clusters/ itself.
        if path.is_file() and "__pycache__" not in path.parts and path.name != "deploy.sh":
            text = path.read_text()
            for word in ("from clusters.", "clusters/<", "CLUSTER_ID =", "_cluster_id", "in_folder",
                         "--remove", "remote_kpo_gpu_", "check_remote_clusters"):
                assert word not in text, (path, word)
    rc = load(project / "include/remote_cluster.py")
    assert rc.REMOTE_POOL == "remote_kpo"
    lines = (project / "scripts/write_connection.py").read_text().splitlines()
    assert 'BEGIN = "    # >>> remote cluster connection: written by scripts/write_connection.py >>>"' in lines
    assert 'END = "    # <<< remote cluster connection <<<"' in lines
    assert 'SETTINGS = PROJECT / "airflow_settings.yaml"' in lines
    assert 'print("next: astro dev start, then trigger the check_remote_cluster DAG")' in [line.strip() for line in lines]
    if answers.get("gpu_node_group"):
        dag = (project / GPU_DAG).read_text()
        assert 'dag_id="remote_kpo_gpu",' in dag and "from include import gpu_nodes" in dag
    assert CONFIG["_cluster_id"] == ""
