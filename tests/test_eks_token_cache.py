"""The rendered EKS exec plugin's token cache (include/kube_auth/eks_token.py), run for real.

REAL: the rendered plugin in a subprocess as the Kubernetes client runs it (boto3/botocore on
a miss), its cache files under a per-test HOME, the token the API double verifies as EKS
would, and, end to end, Airflow with the deferrable remote_kpo. SIMULATED: STS (the double
counts AssumeRole calls and ends sessions at their Expiration), the API server (answers the
plugin's re-check and rejects revoked tokens), see tests/kube_api_double.

What the cache promises, each shown here and each seen failing with the cache or the bound
switched off: one AssumeRole per token lifetime (many runs, one call; concurrent runs too), a
new one a minute before the reported expiry (which never outlives the signing session),
files 0600 in a folder 0700, an entry per cluster/role/caller identity, nothing trusted that
is corrupt, too open, foreign or a symlink, no boto3 on a cached run, and a token the cluster
rejects served for at most KPO_EKS_TOKEN_RECHECK_SECONDS after its last check.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from conftest import AWS_CASES
from e2e_harness import Cluster, finish, migrate
from kube_api_double import ApiDouble
from kube_api_double.auth import AwsCredential, EksAuthenticator, Unauthorized
from kube_api_double.sts import StsDouble

CALLER_KEY, CALLER_SECRET = "AKIAEXAMPLECALLER01", "secret"
OTHER_KEY, OTHER_SECRET = "AKIAEXAMPLECALLER02", "other-secret"


class Plugin:
    """The rendered plugin with its STS double (and an API double to re-check with)."""

    def __init__(self, project, home: Path, *, session_seconds: float | None = None):
        self.project, self.home = project, home
        trust = json.loads((project.path / "aws/trust-policy.json").read_text())
        entry = json.loads((project.path / "aws/access-entry.json").read_text())
        self.eks = EksAuthenticator(project.answers["cluster_name"], project.answers["aws_region"],
                                    access_entries={entry["principalArn"]: entry["kubernetesGroups"]})
        caller = trust["Statement"][0]["Principal"]["AWS"]
        for key, secret in ((CALLER_KEY, CALLER_SECRET), (OTHER_KEY, OTHER_SECRET)):
            self.eks.credentials[key] = AwsCredential(secret, caller)
        self.sts = StsDouble(self.eks, trust, entry["principalArn"], {CALLER_KEY: caller, OTHER_KEY: caller},
                             session_seconds=session_seconds).start()
        self.api = ApiDouble(project.answers["namespace"], [yaml.safe_load((project.path / "k8s/role.yaml").read_text())],
                             [yaml.safe_load((project.path / "k8s/rolebinding.yaml").read_text())], eks=self.eks).start()
        settings = yaml.safe_load((project.path / "airflow_settings.yaml").read_text())["airflow"]
        plugin = settings["connections"][0]["conn_extra"]["kube_config"]["users"][0]["user"]["exec"]
        self.args = [arg.replace("/usr/local/airflow", str(project.path)) for arg in plugin["args"]]
        self.env = {"AWS_ACCESS_KEY_ID": CALLER_KEY, "AWS_SECRET_ACCESS_KEY": CALLER_SECRET, "PATH": "/usr/bin:/bin",
                    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "HOME": str(home),
                    "AWS_ENDPOINT_URL_STS": self.sts.url, "AWS_EC2_METADATA_DISABLED": "true",
                    "KUBERNETES_EXEC_INFO": json.dumps({"apiVersion": "client.authentication.k8s.io/v1"}),
                    # what the connection's kubeconfig sets (include/remote_cluster.py, kube_config)
                    "KPO_EKS_CLUSTER_SERVER": self.api.url, "KPO_EKS_CLUSTER_CA_DATA": self.api.ca_data}

    def stop(self) -> None:
        self.sts.stop()
        self.api.stop()

    def start(self, *python_flags: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *python_flags, *self.args], env=self.env | env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, *python_flags: str, **env: str) -> dict:
        """One run; the ExecCredential it printed, plus what it imported with -X importtime."""
        process = self.start(*python_flags, **env)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        credential = json.loads(out)
        credential["imported"] = [line.split("|")[-1].strip() for line in err.splitlines() if "import time:" in line]
        return credential

    @property
    def assumed(self) -> int:
        return len(self.sts.assume_role_calls)

    @property
    def checks(self) -> list[dict]:
        return [r for r in self.api.requests if r["path"] == "/version"]

    def entries(self) -> list[Path]:
        return sorted((self.home / ".kube/cache/kpo-eks").glob("*.json"))


@pytest.fixture
def plugin(render, tmp_path):
    started = []

    def make(answers=AWS_CASES[0].values[0], **options) -> Plugin:
        started.append(Plugin(render(answers), tmp_path / "home", **options))
        return started[-1]

    yield make
    for one in started:
        one.stop()


def token_of(credential: dict) -> str:
    return credential["status"]["token"]


def signer_key(credential: dict) -> str:
    url = base64.urlsafe_b64decode(token_of(credential)[len("k8s-aws-v1."):] + "==").decode()
    return parse_qs(urlparse(url).query)["X-Amz-Credential"][0].split("/")[0]


def expiry(credential: dict) -> float:
    return time.mktime(time.strptime(credential["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()) + 0.05)


# -- one AssumeRole per lifetime ---------------------------------------------------------------
@pytest.mark.parametrize("answers", AWS_CASES)
def test_many_runs_within_a_lifetime_assume_the_role_once(plugin, answers):
    p = plugin(answers)
    credentials = [p.run() for _ in range(8)]
    assert p.assumed == 1, "one AssumeRole for every run within the token's lifetime"
    assert len({token_of(c) for c in credentials}) == 1
    assert len({c["status"]["expirationTimestamp"] for c in credentials}) == 1, "the reported expiry is never extended"
    assert p.checks == [], "within the re-check interval the cluster is not asked"
    # The cached token is a good one: EKS (the double) takes it as the runner role.
    identity = p.eks.authenticate(token_of(credentials[-1]))
    role = p.project.answers["project_slug"].replace("_", "-") + "-kpo-runner"
    assert identity.username.endswith(f":assumed-role/{role}/airflow-remote-kpo")


def test_concurrent_runs_on_an_empty_cache_assume_the_role_once(plugin):
    p = plugin()
    processes = [p.start() for _ in range(6)]
    tokens = {json.loads(process.communicate(timeout=60)[0])["status"]["token"] for process in processes}
    assert p.assumed == 1 and len(tokens) == 1, "runs that miss together take turns: one AssumeRole serves them all"


def test_a_new_token_a_minute_before_the_reported_expiry(plugin):
    p = plugin()
    lifetime = {"KPO_EKS_TOKEN_LIFETIME_SECONDS": "65"}  # served for 4-5 s, then renewed
    first = p.run(**lifetime)
    assert p.run(**lifetime)["status"] == first["status"] and p.assumed == 1
    sleep_until(expiry(first) - 60)
    renewed = p.run(**lifetime)
    assert p.assumed == 2 and token_of(renewed) != token_of(first)


def test_a_lifetime_of_a_minute_or_less_is_never_served_from_the_cache(plugin):
    p = plugin()
    p.run(KPO_EKS_TOKEN_LIFETIME_SECONDS="60")
    p.run(KPO_EKS_TOKEN_LIFETIME_SECONDS="60")
    assert p.assumed == 2


def test_the_reported_expiry_never_outlives_the_signing_session(plugin):
    """EKS refuses a token once the session that signed it has ended: the cached entry ends with it."""
    p = plugin(session_seconds=65)
    first = p.run()
    ends = p.eks.credentials[signer_key(first)].expires
    assert expiry(first) <= ends < expiry(first) + 1, "expiry = the session's Expiration, not 14 minutes"
    sleep_until(expiry(first) - 60)
    assert token_of(p.run()) != token_of(first) and p.assumed == 2


def test_cache_off_assumes_the_role_every_run(plugin):
    p = plugin()
    for _ in range(3):
        p.run(KPO_EKS_TOKEN_CACHE="off")
    assert p.assumed == 3 and not (p.home / ".kube").exists()


def test_no_writable_home_still_makes_tokens(plugin, tmp_path):
    p = plugin()
    (tmp_path / "not-a-folder").write_text("")
    for _ in range(2):
        p.eks.authenticate(token_of(p.run(HOME=str(tmp_path / "not-a-folder"))))
    assert p.assumed == 2


# -- the files ---------------------------------------------------------------------------------
def test_cache_file_is_0600_in_a_0700_folder(plugin):
    p = plugin()
    folder = p.home / ".kube/cache/kpo-eks"
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)  # made too open by someone else: tightened, files still checked one by one
    p.run()
    (entry,) = p.entries()
    assert oct(entry.stat().st_mode & 0o777) == "0o600"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert [f.name for f in folder.iterdir() if f.name.startswith(".tmp-")] == [], "written through a temporary file"


def test_another_profile_or_role_gets_its_own_entry(plugin, tmp_path):
    p = plugin()
    credentials_file = tmp_path / "credentials"
    credentials_file.write_text(f"[team-a]\naws_access_key_id = {CALLER_KEY}\naws_secret_access_key = {CALLER_SECRET}\n"
                                f"[team-b]\naws_access_key_id = {OTHER_KEY}\naws_secret_access_key = {OTHER_SECRET}\n")
    profiles = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file)}
    a = p.run(**profiles, AWS_PROFILE="team-a")
    b = p.run(**profiles, AWS_PROFILE="team-b")
    assert p.assumed == 2 and token_of(a) != token_of(b)
    assert [c["caller"] for c in p.sts.assume_role_calls] == [CALLER_KEY, OTHER_KEY], "each signed by its own profile"
    assert token_of(p.run(**profiles, AWS_PROFILE="team-a")) == token_of(a), "a's entry still serves a"
    # The same profile name pointing to other keys (the credentials file changed) is another identity.
    credentials_file.write_text(credentials_file.read_text().replace(f"[team-a]\naws_access_key_id = {CALLER_KEY}\n"
                                                                     f"aws_secret_access_key = {CALLER_SECRET}",
                                                                     f"[team-a]\naws_access_key_id = {OTHER_KEY}\n"
                                                                     f"aws_secret_access_key = {OTHER_SECRET}"))
    assert token_of(p.run(**profiles, AWS_PROFILE="team-a")) != token_of(a) and p.assumed == 3
    # The caller's own identity (no role) never gets the role's token.
    own = p.run(KPO_EKS_ROLE_ARN="")
    assert signer_key(own) == CALLER_KEY and p.assumed == 3, "signed as the caller, no AssumeRole"
    assert len(p.entries()) == 4


def plant(p: Plugin, how: str) -> Path:
    """Make an entry as the plugin would, then spoil it one way; a forged token would show if served."""
    p.run()
    (entry,) = p.entries()
    data = json.loads(entry.read_text())
    data["token"] = "k8s-aws-v1.forged"
    entry.unlink()
    if how == "corrupt":
        entry.write_text(json.dumps(data)[:-9])
        entry.chmod(0o600)
    elif how == "group-readable":
        entry.write_text(json.dumps(data))
        entry.chmod(0o640)
    elif how == "foreign-owned":
        entry.write_text(json.dumps(data))
        entry.chmod(0o600)
        os.chown(entry, 4242, 4242)
    elif how == "symlink":
        target = p.home / "elsewhere.json"
        target.write_text(json.dumps(data))
        target.chmod(0o600)
        entry.symlink_to(target)
    elif how == "intact":  # the positive control: the same forged entry, nothing else wrong
        entry.write_text(json.dumps(data))
        entry.chmod(0o600)
    return entry


@pytest.mark.parametrize("how", ["intact", "corrupt", "group-readable", "foreign-owned", "symlink"])
def test_a_spoiled_entry_is_not_trusted_and_is_replaced(plugin, how):
    if how == "foreign-owned" and os.getuid() != 0:
        pytest.skip("making a file of another user needs root")
    p = plugin()
    entry = plant(p, how)
    served = token_of(p.run())
    if how == "intact":
        assert served == "k8s-aws-v1.forged" and p.assumed == 1, "control: a sound entry is served as it is"
        return
    assert served != "k8s-aws-v1.forged" and p.assumed == 2, f"a {how} entry must not be served"
    assert not entry.is_symlink() and entry.stat().st_uid == os.getuid() and oct(entry.stat().st_mode & 0o777) == "0o600"
    assert json.loads(entry.read_text())["token"] == served, "replaced by the new token"


def test_a_cached_run_imports_no_boto3(plugin):
    p = plugin()
    miss = p.run("-X", "importtime")
    hit = p.run("-X", "importtime")
    assert any(m.startswith("botocore") for m in miss["imported"]), "control: importtime shows botocore on a miss"
    assert not [m for m in hit["imported"] if m.split(".")[0] in ("boto3", "botocore")]
    assert p.assumed == 1


# -- a token the cluster rejects ----------------------------------------------------------------
# Long enough that the next plugin run starts within it on a loaded 2-core CI machine (a run
# that assumes the role took up to 1.5 s there; at 1 s the 'within the interval' steps flaked).
RECHECK = 4.0


def test_a_rejected_token_is_served_at_most_the_recheck_interval(plugin):
    p = plugin()
    knob = {"KPO_EKS_TOKEN_RECHECK_SECONDS": str(RECHECK)}
    first = p.run(**knob)
    assert p.run(**knob)["status"] == first["status"] and p.checks == [], "within the interval: no check"
    time.sleep(RECHECK + 0.1)
    assert token_of(p.run(**knob)) == token_of(first) and p.assumed == 1
    assert [c["status"] for c in p.checks] == [200], "after the interval: checked once, accepted, kept"
    p.api.revoke_tokens()
    assert token_of(p.run(**knob)) == token_of(first), "within the interval the plugin cannot know (the bound)"
    time.sleep(RECHECK + 0.1)
    renewed = p.run(**knob)
    assert [c["status"] for c in p.checks] == [200, 401]
    assert token_of(renewed) != token_of(first) and p.assumed == 2, "rejected: dropped, the role assumed again"
    p.api.authenticate(f"Bearer {token_of(renewed)}")  # the new one is accepted
    with pytest.raises(Unauthorized, match="revoked"):
        p.api.authenticate(f"Bearer {token_of(first)}")


def test_the_check_uses_provide_cluster_info_when_the_client_passes_it(plugin):
    p = plugin()
    info = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
            "spec": {"cluster": {"server": p.api.url, "certificate-authority-data": p.api.ca_data}}}
    env = {"KPO_EKS_TOKEN_RECHECK_SECONDS": "0", "KPO_EKS_CLUSTER_SERVER": "", "KUBERNETES_EXEC_INFO": json.dumps(info)}
    first = p.run(**env)
    p.api.revoke_tokens()
    assert token_of(p.run(**env)) != token_of(first) and [c["status"] for c in p.checks] == [401]


def test_without_a_server_to_ask_a_token_is_served_for_the_interval_only(plugin):
    p = plugin()
    env = {"KPO_EKS_TOKEN_RECHECK_SECONDS": str(RECHECK), "KPO_EKS_CLUSTER_SERVER": ""}
    first = p.run(**env)
    assert token_of(p.run(**env)) == token_of(first)
    time.sleep(RECHECK + 0.1)
    assert token_of(p.run(**env)) != token_of(first) and p.assumed == 2 and p.checks == []


def test_an_unanswered_check_serves_the_token_and_stays_due(plugin):
    p = plugin()
    env = {"KPO_EKS_TOKEN_RECHECK_SECONDS": "0", "KPO_EKS_CLUSTER_SERVER": "https://127.0.0.1:9"}  # nothing listens
    first = p.run(**env)
    checked = json.loads(p.entries()[0].read_text())["checked"]
    assert token_of(p.run(**env)) == token_of(first) and p.assumed == 1
    assert json.loads(p.entries()[0].read_text())["checked"] == checked, "no answer is not an acceptance"


# -- end to end: revoked mid-run, real Airflow -------------------------------------------------
@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return migrate(tmp_path_factory.mktemp("airflow-home"))


TICKS = re.compile(r"still running, tick (\d+)\b")
# Seconds; 60 by default, where a rejected token costs the try and the retry a minute later
# recovers. At about the trigger's own retry span (3 attempts, 1 s and 2 s apart) a try is lost
# only when the revocation lands just after a check.
E2E_RECHECK = 3


def test_revoked_mid_run_the_deferred_task_recovers_within_the_bound(render, airflow_home, tmp_path):
    """The cluster starts rejecting every token made so far while the deferred pod runs: the
    trigger's calls get 401 for at most E2E_RECHECK s (plus one call), then the plugin's check
    gets the 401, assumes the role again, and the task finishes with every log line once."""
    with Cluster(render({"cloud": "aws", "xcom": True}).path, airflow_home, tmp_path,
                 double_options={"extra_run_seconds": 8}) as cluster:
        process = cluster.start("remote_kpo", KPO_EKS_TOKEN_RECHECK_SECONDS=str(E2E_RECHECK))
        deadline = time.time() + 300
        while not any(p["status"]["phase"] == "Running" for p in cluster.double.live_pods()):
            assert time.time() < deadline and process.poll() is None, "the pod never ran"
            time.sleep(0.1)
        before = [r for r in cluster.double.requests if r.get("token")]
        assert len({r["token"] for r in before}) == 1 and len(cluster.sts.assume_role_calls) == 1, \
            "healthy: every call so far (worker and trigger) used one token from one AssumeRole"
        revoked_at = time.time()
        cluster.double.revoke_tokens()
        result = finish(process)

        assert result.succeeded, result.log[-4000:]
        assert len(cluster.double.created_pods) == 1 and cluster.double.live_pods() == []
        assert set(Counter(TICKS.findall(result.log)).values()) == {1}, "every log line once"
        rejected = [r for r in cluster.double.requests if r["status"] == 401]
        calls = [r for r in rejected if r["path"] != "/version"]
        checks = [r for r in rejected if r["path"] == "/version"]
        assert calls, "the cached token was served after the revocation (what the bound is about)"
        assert len(checks) == 1 and rejected[-1] is checks[0], "one check saw the 401; no 401 after it"
        # The bound: served at most E2E_RECHECK s after it was made or last found accepted.
        made = cluster.sts.assume_role_calls[0]["t"]
        last_ok = max([made] + [r["t"] for r in cluster.double.requests
                                if r["path"] == "/version" and r["status"] == 200 and r["t"] < revoked_at])
        assert all(r["t"] <= last_ok + E2E_RECHECK + 2 for r in calls), (last_ok, [r["t"] for r in calls])
        assert checks[0]["t"] >= last_ok + E2E_RECHECK, "and not checked before the interval was up"
        assert len(cluster.sts.assume_role_calls) == 2, "one AssumeRole before, one after the revocation"
        # The trigger retries a failed call for about 3 s: when the revocation lands just after a
        # check, all of them can fall inside the interval and the try is lost (seen on a loaded CI
        # machine); the retry then gets the new token. Never more than one.
        assert result.log.count("new_state=up_for_retry") <= 1, "at most one try lost to the bound"
