#!/usr/bin/env bash
# Prepare the remote cluster for this project and write the Airflow connection, idempotently.
#
#   scripts/setup_remote.sh --dry-run     # print every command; run only read-only queries
#   scripts/setup_remote.sh [options]     # create or update what is missing, verify, connect
#
# Steps: checks first (answers, CLIs, sign-in, account), then the cloud identity Airflow runs
# as (scripts/setup/<cloud>.sh), k8s/ (namespace, its LimitRange and quota, Role, RoleBinding),
# a pass/fail check of every permission the DAGs need, asked as that identity, the connection.
# Re-running after success changes nothing. Every value comes from include/remote_cluster.py.
set -euo pipefail

cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null 2>&1; then
    printf 'ERROR: python3 is not installed or not on PATH; install Python 3.9 or later, then run again\n' >&2
    exit 1
fi
DRY_RUN=false
LOCAL_DEVELOPER=false
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ADMIN_KUBECONFIG="$WORK/admin.kubeconfig"
# How this script talks to the cluster as an admin; a cloud file may point it elsewhere.
KUBECTL=(kubectl --kubeconfig "$ADMIN_KUBECONFIG")
# With --local-developer: a RoleBinding for the signed-in developer (GKE, AKS), who it names,
# and the kubectl impersonation that checks it. Set by the cloud file.
DEVELOPER_MANIFEST=""
DEVELOPER_NAME=""
DEVELOPER_AS=()

say() { printf '%s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
shown() { printf ' %q' "$@"; }
# A CLI's own error text, whole and indented, so that only our last line starts with ERROR:.
indented() { sed 's/^/    /' "$1" >&2; }

# A command that changes something: printed, and run unless --dry-run.
change() {
    local status=0
    if "$DRY_RUN"; then
        printf 'would run:%s\n' "$(shown "$@")"
    else
        printf 'running:%s\n' "$(shown "$@")"
        "$@" || status=$?
        [ "$status" -eq 0 ] || die "$(command_words "$@") failed (exit $status); its message is above"
    fi
}

# What a failed CLI call said, from its error text: signed-out (no or expired credentials),
# denied (signed in, not allowed), not-found, or other.
failure_kind() {
    if grep -Eq 'Unable to locate credentials|ExpiredToken|[Tt]oken (has|is) expired|Error loading SSO Token|InvalidClientTokenId|UnrecognizedClientException|You do not currently have an active account|gcloud auth login|[Rr]eauthentication|invalid_grant|az login|AADSTS[0-9]+' "$1"; then
        echo signed-out
    elif grep -Eq 'AccessDenied|UnauthorizedOperation|not authorized to perform|PERMISSION_DENIED|does not have permission|AuthorizationFailed|[Ff]orbidden|code=403' "$1"; then
        echo denied
    elif grep -Eq 'NoSuchEntity|ResourceNotFound|NotFound|NOT_FOUND|code=404|[Nn]ot found|cannot be found|could not be found' "$1"; then
        echo not-found
    else
        echo other
    fi
}

# A call as a person would name it: its command words and its first naming option, e.g.
# "aws iam get-role --role-name NAME" (not --query, --output and the like).
command_words() {
    local words=()
    while [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; do words+=("$1"); shift; done
    case "${1:-}" in
        "" | --query | --output | --format | --flatten | --filter) ;;
        *) if [ "$#" -ge 2 ]; then words+=("$1" "$2"); fi ;;
    esac
    printf '%s' "${words[*]}"
}

# Stop on a failed call with its whole error text and one line naming the cause and the fix.
# SIGN_IN (from the cloud file) says how to sign in.
failed() {
    local kind="$1" err="$2" what
    shift 2
    what="$(command_words "$@")"
    say "  $1 says:"
    indented "$err"
    case "$kind" in
        signed-out) die "$1: not signed in, or the sign-in expired ($what); $SIGN_IN, then run again" ;;
        denied) die "$1: not allowed: $what; run this as someone who may manage IAM and the cluster (README: Set up the cluster side), then run again" ;;
        not-found) die "$1: not found: $what; check the project's answers, then run again" ;;
        *) die "$what failed; see its message above, fix that, then run again" ;;
    esac
}

# A read-only query, run in this shell (never in a subshell, so that stopping stops the
# script): its stdout is left in QUERY_OUT. Returns 0 when found and 1 when the CLI says "not
# found"; anything else (not signed in, not allowed, any other failure) stops the script, so
# that a failed read never plans a create. `probe` also returns 2 for "not allowed".
QUERY_OUT=""
query() { run_query false "$@"; }
probe() { run_query true "$@"; }
# shellcheck disable=SC2034  # QUERY_OUT: read by scripts/setup/<cloud>.sh
run_query() {
    local denied_ok="$1" kind
    shift
    printf 'query:%s\n' "$(shown "$@")" >&2
    QUERY_OUT=""
    if "$@" >"$WORK/query.out" 2>"$WORK/query.err"; then
        QUERY_OUT="$(cat "$WORK/query.out")"
        return 0
    fi
    kind="$(failure_kind "$WORK/query.err")"
    if [ "$kind" = not-found ]; then
        say "  -> not found:"
        indented "$WORK/query.err"
        return 1
    fi
    if [ "$kind" = denied ] && "$denied_ok"; then
        say "  -> not allowed:"
        indented "$WORK/query.err"
        return 2
    fi
    failed "$kind" "$WORK/query.err" "$@"
}

# A value from include/remote_cluster.py, the project's one list of names.
setting() {
    python3 -c 'import sys; sys.path.insert(0, "."); from include import remote_cluster as rc; print(getattr(rc, sys.argv[1], ""))' "$1"
}

# "verb resource subresource" per line ("-": none), then "verb resource/name -" for the rules
# limited to one object by name: exactly what k8s/role.yaml grants. kubectl auth can-i reads
# "pods/log" as a pod named log, so a subresource goes in --subresource.
permissions() {
    python3 -c 'import sys; sys.path.insert(0, "."); from include import remote_cluster as rc
for verb, resource, sub in rc.REQUIRED_PERMISSIONS: print(verb, resource, sub or "-")
for verb, resource, name in rc.NAMED_PERMISSIONS: print(verb, resource + "/" + name, "-")'
}

# The can-i arguments of one permissions() line.
can_i_args() {
    CAN_I=(auth can-i "$1" "$2")
    [ "$3" = - ] || CAN_I+=(--subresource "$3")
}

# Equal JSON documents, whatever their key order and spacing.
same_json() {
    python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != json.load(open(sys.argv[2])))' "$1" "$2"
}

# A RoleBinding of the project's Role to the signed-in developer (kind User, one subject per
# name given), as a manifest of its own: k8s/rolebinding.yaml stays the deployment's only.
developer_rolebinding() {
    DEVELOPER_MANIFEST="$WORK/local-developer-rolebinding.yaml"
    python3 -c 'import hashlib, json, re, sys
role = re.search(r"^metadata:\n  name: (\S+)", open("k8s/role.yaml").read(), re.M).group(1)
namespace, subjects = sys.argv[1], sys.argv[2:]
print(json.dumps({
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
    "metadata": {"name": role + "-dev-" + hashlib.sha256(subjects[0].encode()).hexdigest()[:12],
                 "namespace": namespace, "annotations": {"remote-kpo/local-developer": subjects[0]}},
    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": s} for s in subjects],
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
}, indent=2))' "$NAMESPACE" "$@" >"$DEVELOPER_MANIFEST"
    DEVELOPER_NAME="$1"
    DEVELOPER_AS=(--as "$1")
    say "local developer: RoleBinding $(sed -n 's/^    "name": "\(.*\)",$/\1/p' "$DEVELOPER_MANIFEST" | head -n 1) binds the project's Role to User $*"
}

# Where each CLI comes from, for the line that says it is missing.
install_hint() {
    case "$1" in
        aws) echo "install the AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html)" ;;
        eksctl) echo "install eksctl (https://eksctl.io/installation/)" ;;
        gcloud) echo "install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)" ;;
        az) echo "install the Azure CLI (https://learn.microsoft.com/cli/azure/install-azure-cli)" ;;
        kubelogin) echo "install kubelogin (az aks install-cli, or https://azure.github.io/kubelogin/install.html)" ;;
        kubectl) echo "install kubectl (https://kubernetes.io/docs/tasks/tools/)" ;;
        *) echo "install it" ;;
    esac
}

CLOUD="$(setting CLOUD)"
# shellcheck disable=SC2034  # read by scripts/setup/<cloud>.sh
CLUSTER_NAME="$(setting CLUSTER_NAME)"
NAMESPACE="$(setting REMOTE_NAMESPACE)"
# shellcheck source=/dev/null  # one of scripts/setup/*.sh, kept for this project's cloud
source "scripts/setup/$CLOUD.sh"

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "$0"
    printf '\nOptions:\n  --dry-run             print the commands that would change something; change nothing\n'
    printf '  --local-developer     also admit you, the signed-in identity, for local runs (astro dev start)\n'
    cloud_usage
}

# shellcheck disable=SC2034  # LOCAL_DEVELOPER: read by scripts/setup/<cloud>.sh
while [ "$#" -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=true ;;
        --local-developer) LOCAL_DEVELOPER=true ;;
        -h | --help) usage; exit 0 ;;
        *) cloud_option "$@" || die "$1: unknown option; allowed: --dry-run, --local-developer, --help and the options listed by --help"
           shift "$CLOUD_SHIFT"; continue ;;
    esac
    shift
done

# Before any change: real answers, the CLIs, signed in to the right account.
preflight() {
    local examples tool
    examples="$(setting EXAMPLE_ANSWERS)"
    [ -z "$examples" ] || die "$(printf '%s' "$examples" | sed 's/ /, /g'): still the template's example values; render the project again with your own (cookiecutter <template> <answer>=<value> ..., or cruft update --variables-to-update '{\"<answer>\": \"<value>\"}'), then run again"
    for tool in $(cloud_tools); do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed or not on PATH; $(install_hint "$tool"), then run again"
    done
    cloud_signed_in
}

apply_manifests() {
    local manifest status label
    for manifest in "$@"; do
        [ -f "$manifest" ] || continue
        label="$manifest"
        [ "$manifest" != "$DEVELOPER_MANIFEST" ] || label="RoleBinding for local developer $DEVELOPER_NAME"
        # kubectl diff (read-only, also in a dry run): 0 = already so, 1 = differs, >1 = error.
        status=0
        printf 'query:%s\n' "$(shown "${KUBECTL[@]}" diff -f "$manifest")" >&2
        "${KUBECTL[@]}" diff -f "$manifest" >/dev/null 2>"$WORK/diff.err" || status=$?
        case "$status" in
            0) say "unchanged: $label" ;;
            1) change "${KUBECTL[@]}" apply -f "$manifest" ;;
            # A dry run cannot diff what lives in a namespace it would create first, nor without the
            # admin kubeconfig a cloud CLI call would fetch (EKS, GKE, AKS): it plans the apply.
            *) if "$DRY_RUN"; then
                   change "${KUBECTL[@]}" apply -f "$manifest"
               else
                   failed "$(failure_kind "$WORK/diff.err")" "$WORK/diff.err" kubectl diff -f "$manifest"
               fi ;;
        esac
    done
}

# Ask the API server, as the Airflow identity (and with --local-developer as you), for every
# permission the DAGs need.
verify_permissions() {
    local verb resource sub answer failed=0 row
    if "$DRY_RUN"; then
        cloud_verify_developer
        while read -r verb resource sub; do
            can_i_args "$verb" "$resource" "$sub"
            printf 'would run:%s\n' "$(shown "${KUBECTL[@]}" "${CAN_I[@]}" \
                --namespace "$NAMESPACE" "${IMPERSONATE[@]}")"
            [ "${#DEVELOPER_AS[@]}" -eq 0 ] || printf 'would run:%s\n' "$(shown "${KUBECTL[@]}" "${CAN_I[@]}" \
                --namespace "$NAMESPACE" "${DEVELOPER_AS[@]}")"
        done < <(permissions)
        return 0
    fi
    echo
    cloud_verify_developer || failed=1
    if [ "${#DEVELOPER_AS[@]}" -eq 0 ]; then
        printf '%-8s %-14s %s   (as %s)\n' verb resource result "${IMPERSONATE[*]}"
    else
        printf '%-8s %-14s %-8s %s   (airflow: %s; developer: %s)\n' verb resource airflow developer \
            "${IMPERSONATE[*]}" "${DEVELOPER_AS[*]}"
    fi
    while read -r verb resource sub; do
        can_i_args "$verb" "$resource" "$sub"
        row="$(printf '%-8s %-14s' "$verb" "$resource$( [ "$sub" = - ] || printf '/%s' "$sub")")"
        answer="$("${KUBECTL[@]}" "${CAN_I[@]}" \
            --namespace "$NAMESPACE" "${IMPERSONATE[@]}" 2>/dev/null || true)"
        if [ "$answer" = yes ]; then row="$row PASS"; else row="$row FAIL"; failed=1; fi
        if [ "${#DEVELOPER_AS[@]}" -gt 0 ]; then
            answer="$("${KUBECTL[@]}" "${CAN_I[@]}" \
                --namespace "$NAMESPACE" "${DEVELOPER_AS[@]}" 2>/dev/null || true)"
            if [ "$answer" = yes ]; then row="$row     PASS"; else row="$row     FAIL"; failed=1; fi
        fi
        printf '%s\n' "$row"
    done < <(permissions)
    echo
    [ "$failed" -eq 0 ] || die "the Airflow identity$( [ -z "$DEVELOPER_NAME" ] || printf ' or you') lacks the permissions marked FAIL; check k8s/ and the identity mapping above, then run again"
}

preflight                  # nothing has changed before this passes
cloud_identity             # the cloud side: identity, its mapping, admin credentials
# The LimitRange before the quota: once the quota counts requests, containers need its defaults.
apply_manifests k8s/namespace.yaml k8s/resource-defaults.yaml k8s/resourcequota.yaml k8s/serviceaccount.yaml \
    k8s/role.yaml k8s/rolebinding.yaml \
    ${DEVELOPER_MANIFEST:+"$DEVELOPER_MANIFEST"}
verify_permissions
if "$DRY_RUN"; then
    python3 scripts/write_connection.py --dry-run ${CONNECTION_ARGS[@]+"${CONNECTION_ARGS[@]}"}
else
    python3 scripts/write_connection.py ${CONNECTION_ARGS[@]+"${CONNECTION_ARGS[@]}"}
fi
