#!/usr/bin/env bash
# Prepare the remote cluster for this project and write the Airflow connection, idempotently.
#
#   scripts/setup_remote.sh --dry-run     # print every command; run only read-only queries
#   scripts/setup_remote.sh [options]     # create or update what is missing, verify, connect
#
# Steps: the cloud identity Airflow runs as (scripts/setup/<cloud>.sh), the namespace, Role and
# RoleBinding from k8s/, a pass/fail check of every permission the DAGs need, asked as that
# identity, then scripts/write_connection.py. Re-running after success changes nothing.
# Every value comes from include/remote_cluster.py; nothing here is edited by hand.
set -euo pipefail

cd "$(dirname "$0")/.."
DRY_RUN=false
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ADMIN_KUBECONFIG="$WORK/admin.kubeconfig"
# How this script talks to the cluster as an admin; a cloud file may point it elsewhere.
KUBECTL=(kubectl --kubeconfig "$ADMIN_KUBECONFIG")

say() { printf '%s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
shown() { printf ' %q' "$@"; }

# A command that changes something: printed, and run unless --dry-run.
change() {
    if "$DRY_RUN"; then
        printf 'would run:%s\n' "$(shown "$@")"
    else
        printf 'running:%s\n' "$(shown "$@")"
        "$@"
    fi
}

# A read-only query: always run, its stdout is the caller's. Failure means "not there";
# the reason is shown so that a missing login is not mistaken for a missing resource.
query() {
    printf 'query:%s\n' "$(shown "$@")" >&2
    if "$@" 2>"$WORK/query.err"; then
        return 0
    fi
    say "  -> not found: $(tail -n 1 "$WORK/query.err")"
    return 1
}

# A value from include/remote_cluster.py, the project's one list of names.
setting() {
    python3 -c 'import sys; sys.path.insert(0, "."); from include import remote_cluster as rc; print(getattr(rc, sys.argv[1]))' "$1"
}

# "verb resource[/subresource]" per line: exactly what k8s/role.yaml grants.
permissions() {
    python3 -c 'import sys; sys.path.insert(0, "."); from include import remote_cluster as rc
for verb, resource, sub in rc.REQUIRED_PERMISSIONS: print(verb, resource + ("/" + sub if sub else ""))'
}

# Equal JSON documents, whatever their key order and spacing.
same_json() {
    python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != json.load(open(sys.argv[2])))' "$1" "$2"
}

CLOUD="$(setting CLOUD)"
# shellcheck disable=SC2034  # read by scripts/setup/<cloud>.sh
CLUSTER_NAME="$(setting CLUSTER_NAME)"
NAMESPACE="$(setting REMOTE_NAMESPACE)"
# shellcheck source=/dev/null  # one of scripts/setup/*.sh, kept for this project's cloud
source "scripts/setup/$CLOUD.sh"

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
    printf '\nOptions:\n  --dry-run             print the commands that would change something; change nothing\n'
    cloud_usage
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=true ;;
        -h | --help) usage; exit 0 ;;
        *) cloud_option "$@" || die "$1: unknown option; allowed: --dry-run, --help and the options listed by --help"
           shift "$CLOUD_SHIFT"; continue ;;
    esac
    shift
done

apply_manifests() {
    local manifest status
    for manifest in "$@"; do
        [ -f "$manifest" ] || continue
        if "$DRY_RUN"; then
            change "${KUBECTL[@]}" apply -f "$manifest"
            continue
        fi
        # kubectl diff: 0 = already so, 1 = differs, >1 = error.
        status=0
        "${KUBECTL[@]}" diff -f "$manifest" >/dev/null 2>"$WORK/diff.err" || status=$?
        case "$status" in
            0) say "unchanged: $manifest" ;;
            1) change "${KUBECTL[@]}" apply -f "$manifest" ;;
            *) die "kubectl diff -f $manifest failed: $(tail -n 1 "$WORK/diff.err")" ;;
        esac
    done
}

# Ask the API server, as the Airflow identity, for every permission the DAGs need.
verify_permissions() {
    local verb resource answer failed=0
    if "$DRY_RUN"; then
        while read -r verb resource; do
            printf 'would run:%s\n' "$(shown "${KUBECTL[@]}" auth can-i "$verb" "$resource" \
                --namespace "$NAMESPACE" "${IMPERSONATE[@]}")"
        done < <(permissions)
        return 0
    fi
    printf '\n%-8s %-14s %s   (as %s)\n' verb resource result "${IMPERSONATE[*]}"
    while read -r verb resource; do
        answer="$("${KUBECTL[@]}" auth can-i "$verb" "$resource" \
            --namespace "$NAMESPACE" "${IMPERSONATE[@]}" 2>/dev/null || true)"
        if [ "$answer" = yes ]; then
            printf '%-8s %-14s %s\n' "$verb" "$resource" PASS
        else
            printf '%-8s %-14s %s\n' "$verb" "$resource" FAIL
            failed=1
        fi
    done < <(permissions)
    echo
    [ "$failed" -eq 0 ] || die "the Airflow identity lacks the permissions marked FAIL; check k8s/ and the identity mapping above, then run again"
}

cloud_identity             # the cloud side: identity, its mapping, admin credentials
apply_manifests k8s/namespace.yaml k8s/serviceaccount.yaml k8s/role.yaml k8s/rolebinding.yaml
verify_permissions
if "$DRY_RUN"; then
    python3 scripts/write_connection.py --dry-run ${CONNECTION_ARGS[@]+"${CONNECTION_ARGS[@]}"}
else
    python3 scripts/write_connection.py ${CONNECTION_ARGS[@]+"${CONNECTION_ARGS[@]}"}
fi
