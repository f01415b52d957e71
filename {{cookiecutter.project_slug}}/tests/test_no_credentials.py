"""No file that goes into the image looks like a credential.

`astro deploy` copies this folder into the image, except what .dockerignore names. .dockerignore
keeps out the credential files this project writes (connection.env, airflow_settings.yaml, .env)
by their names, not by broad patterns, so a key saved under any other name would ship. This
test reads every file the image would get, applying .dockerignore the way Docker does (patterns
rooted at this folder, `*` `?` `[...]` within one path part, `**` across parts, `!` re-includes,
the last matching line wins, an ignored folder hides what is in it), and fails on content that
looks like a private key, a Google service-account key, an AWS access key id, or a kubeconfig
holding a token or client key. Standard library and pytest only: it runs in `astro dev pytest`.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
READ_AT_MOST = 32 * 1024 * 1024  # bytes per file; a key at the end of a larger data file goes unseen

HOW_TO_FIX = (
    "Move it out of the project, or name it in .dockerignore and .gitignore if you must keep it here "
    "(deployed, it belongs in a secrets backend or a secret deployment variable). Better, use no key: "
    "deployed, the cluster and the cloud accept the deployment's own identity (README, 'How Airflow gets onto the cluster')."
)

# What each finding looks like, most specific first (one name per file), and the patterns that
# must all occur in it. Written so that no line of this file, or of its .pyc, matches them.
TOKEN_VALUE = r"""["']?\s*:\s*["']?[\w.~+/=-]{8}"""
LOOKS_LIKE = [
    ("a Google service-account key (JSON, type service_account, with a private_key)",
     [r'"type"\s*:\s*"service_account"', r'"private_key"\s*:\s*"']),
    ("a kubeconfig holding a client key (client-key-data)",
     [r"""(?<![\w-])["']?client-key-data["']?\s*:\s*["']?[A-Za-z0-9+/=]{16}"""]),
    ("a kubeconfig holding a bearer token (kind Config, with a token)",
     [r"""(?<![\w-])["']?kind["']?\s*:\s*["']?Config\b""", r"""(?<![\w-])["']?token""" + TOKEN_VALUE]),
    ("a private key (a PEM block BEGIN ... PRIVATE KEY)",
     [r"-{5}BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-{5}"]),
    ("an AWS access key id (AKIA or ASIA and 16 more)",
     [r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"]),
]
LOOKS_LIKE = [(name, [re.compile(p) for p in patterns]) for name, patterns in LOOKS_LIKE]


def dockerignore_patterns(root: Path) -> list[tuple[bool, re.Pattern]]:
    """(exclude?, regex) per .dockerignore line, as Docker reads them (moby/patternmatcher)."""
    path = root / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    patterns = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        line = line if exclude else line[1:].strip()
        line = posixpath.normpath(line).lstrip("/") if line else line
        patterns.append((exclude, re.compile(glob_to_regex(line))))
    return patterns


def glob_to_regex(pattern: str) -> str:
    out, i = "^", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i == len(pattern) else "(.*/)?"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif char in "[]":
            out += char
        else:
            out += re.escape(char)
        i += 1
    return out + "$"


def ignored(rel: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last line matching the path or one of its parent folders decides."""
    parts = rel.split("/")
    candidates = [rel] + ["/".join(parts[:n]) for n in range(1, len(parts))]
    verdict = False
    for exclude, regex in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            verdict = exclude
    return verdict


def image_files(root: Path) -> list[str]:
    """Paths (relative, with /) of the files a build of `root` copies into the image."""
    patterns = dockerignore_patterns(root)
    can_reinclude = any(not exclude for exclude, _ in patterns)
    found = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        if not can_reinclude:  # an ignored folder has nothing in the image: do not read it
            dirs[:] = [d for d in dirs if not ignored(prefix + d, patterns)]
        found += [prefix + f for f in files if not ignored(prefix + f, patterns)]
    return sorted(found)


def what_it_looks_like(path: Path) -> str | None:
    if not path.is_file():  # a socket, a broken link
        return None
    with path.open("rb") as handle:
        text = handle.read(READ_AT_MOST).decode("utf-8", errors="ignore")
    return next((name for name, regexes in LOOKS_LIKE if all(r.search(text) for r in regexes)), None)


def findings(root: Path) -> list[str]:
    return [f"{rel}: looks like {kind}" for rel in image_files(root)
            if (kind := what_it_looks_like(root / rel))]


def test_no_file_in_the_image_looks_like_a_credential():
    found = findings(PROJECT)
    assert not found, "\n".join(["Files that `astro deploy` would copy into the image:", *found, HOW_TO_FIX])


# The check itself, on made-up files. The credential-shaped text is joined at run time, so this
# file holds none (secret scanners, and the check above, read it too).
def joined(*parts: str) -> str:
    return "".join(parts)


def test_the_check_finds_each_kind_and_passes_ordinary_files(tmp_path):
    pem_key = joined("-----BEGIN ", "RSA PRIVATE", " KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n")
    files = {
        "include/svc.json": joined('{"type": "service', '_account", "private', '_key": "', "k", '"}'),
        "include/k8s.yaml": joined("apiVersion: v1\nkind: ", "Config\nusers:\n- user:\n    tok", "en: abcdefgh12345678\n"),
        "dags/client.yaml": joined("users:\n- user:\n    client-key", "-data: LS0tLS1CRUdJTiBSU0Eg\n"),
        "plugins/tls.key": pem_key,
        "include/aws.py": joined("KEY_ID = 'AK", "IAZ7QXW3RT5YUIOP9L'\n"),
        # Ordinary files: data JSON, a CA bundle, a kubeconfig with an exec plugin, a token mentioned.
        "include/data/keywords.json": '{"keywords": ["token", "private_key", "service_account"]}\n',
        "include/certs/corp-ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "include/exec.yaml": joined("kind: ", "Config\nusers:\n- user:\n    exec:\n      command: kubelogin\n"),
        "dags/notes.md": "The token: comes from the exec plugin.\n",
        # Credentials .dockerignore keeps out: not read.
        "connection.env": pem_key,
        "include/.env": pem_key,
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / ".dockerignore").write_text("**/.env\nconnection.env\n")
    assert findings(tmp_path) == [
        "dags/client.yaml: looks like a kubeconfig holding a client key (client-key-data)",
        "include/aws.py: looks like an AWS access key id (AKIA or ASIA and 16 more)",
        "include/k8s.yaml: looks like a kubeconfig holding a bearer token (kind Config, with a token)",
        "include/svc.json: looks like a Google service-account key (JSON, type service_account, with a private_key)",
        "plugins/tls.key: looks like a private key (a PEM block BEGIN ... PRIVATE KEY)",
    ]


def rules(folder: Path, text: str) -> list[tuple[bool, re.Pattern]]:
    (folder / ".dockerignore").write_text(text)
    return dockerignore_patterns(folder)


def test_dockerignore_is_read_as_docker_reads_it(tmp_path):
    def check(text: str, out: list[str], kept: list[str]) -> None:
        patterns = rules(tmp_path, text)
        assert [p for p in out + kept if ignored(p, patterns)] == out, text

    check("**/*.key\n", ["y.key", "dags/x/y.key"], ["dags/y.keys"])
    check("secrets\n", ["secrets", "secrets/deep/file.json"], ["include/secrets"])
    check("/include/*.pem\n", ["include/a.pem"], ["include/x/a.pem", "a.pem"])
    check("data/**\n# a comment\n\n", ["data/x/y"], ["include/data/x"])
    check("a?c\n[xy].txt\n", ["abc", "x.txt"], ["a/c", "z.txt"])
    check("./include/*.pem\n!include/keep.pem\n", ["include/a.pem"], ["include/keep.pem"])
    check("include\n!include/data\n", ["include/a.py"], ["include/data/k.json"])
