#!/usr/bin/env bash
# Deploy this project to an Astro deployment, in one command:
#   scripts/deploy.sh --deployment-id <id> [--dry-run]
#   scripts/deploy.sh --deployment-id <id> --rotate-token [--token-duration 24h]   # generic clusters
#
# Steps: connection.env into the deployment as secret environment variables (created or
# updated), the pool the DAGs run in (created, or updated if its slots differ), `astro deploy`,
# then how to trigger the preflight there. --rotate-token mints a new ServiceAccount token
# (scripts/write_connection.py), writes the connection files and updates the variable only.
# Needs the Astro CLI, signed in (`astro login`) or with ASTRO_API_TOKEN set. Every value
# comes from include/remote_cluster.py; nothing here is edited by hand.
set -euo pipefail

cd "$(dirname "$0")/.."
DRY_RUN=false
ROTATE=false
DEPLOYMENT_ID=""
TOKEN_ARGS=()
TOKEN_OPTION=""  # the first option that needs --rotate-token
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

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

# A read-only call to the Astro CLI: always run, its stdout is the caller's. A refusal for want
# of a login is told apart from any other failure, which is shown with its last line.
astro_query() {
    printf 'query:%s\n' "$(shown astro "$@")" >&2
    if astro "$@" 2>"$WORK/astro.err"; then
        return 0
    fi
    if grep -qiE 'no context set|not connected|astro login|unauthori[sz]ed|\(401\)' "$WORK/astro.err"; then
        die "not signed in to Astro: run astro login (or export ASTRO_API_TOKEN) and run again"
    fi
    die "astro $1 $2 ... failed: $(tail -n 1 "$WORK/astro.err")"
}

# A value from include/remote_cluster.py, the project's one list of names; with a folder as $2,
# from that added cluster's own (clusters/<pkg>/include/remote_cluster.py).
setting() {
    python3 -c 'import sys; sys.path.insert(0, sys.argv[2]); from include import remote_cluster as rc; print(getattr(rc, sys.argv[1]))' "$1" "${2:-.}"
}

# The clusters added to this project (cookiecutter <template> --directory cluster): one folder
# each, with its own include/remote_cluster.py; their connections are in connection.env too.
CLUSTER_DIRS=()
for found in clusters/*/include/remote_cluster.py; do
    if [ -f "$found" ]; then CLUSTER_DIRS+=("${found%/include/remote_cluster.py}"); fi
done

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0"
    printf '\nOptions:\n'
    printf '  --deployment-id ID     the Astro deployment (Deployment > Details > ID, or astro deployment list)\n'
    printf '  --dry-run              print the commands that would change something; change nothing\n'
    printf '  --rotate-token         generic clusters: mint a new token and update the variable (no deploy)\n'
    printf '  --token-duration D     with --rotate-token: the token lifetime, e.g. 24h (default), 12h, 90m\n'
    printf '  --kubeconfig PATH      with --rotate-token: an admin kubeconfig (default: kubectl'"'"'s own)\n'
    printf '  --context NAME         with --rotate-token: its context (default: the current one)\n'
}

value_of() {  # the value of option $1, which must be there and not look like another option
    [ "$#" -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ] || die "$1: needs a value; see --help"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --deployment-id) value_of "$@"; DEPLOYMENT_ID="$2"; shift ;;
        --dry-run) DRY_RUN=true ;;
        --rotate-token) ROTATE=true ;;
        --token-duration)
            value_of "$@"
            re='^([0-9]+[hms])+$'
            [[ $2 =~ $re ]] || die "--token-duration: '$2' is not a duration; use e.g. 24h, 12h or 90m (kubectl create token --duration)"
            TOKEN_ARGS+=(--token-duration "$2"); TOKEN_OPTION="${TOKEN_OPTION:-$1}"; shift ;;
        --kubeconfig | --context) value_of "$@"; TOKEN_ARGS+=("$1" "$2"); TOKEN_OPTION="${TOKEN_OPTION:-$1}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "$1: unknown option; allowed: --deployment-id, --dry-run, --rotate-token, --token-duration, --kubeconfig, --context, --help" ;;
    esac
    shift
done

[ -n "$DEPLOYMENT_ID" ] || die "--deployment-id: required; it is on the deployment's page in Astro (Details > ID) or in astro deployment list"
case "$DEPLOYMENT_ID" in
    *[!A-Za-z0-9_-]*) die "--deployment-id: '$DEPLOYMENT_ID' is not a deployment id (letters, digits, '-' and '_' only)" ;;
esac
if ! "$ROTATE" && [ -n "$TOKEN_OPTION" ]; then
    die "$TOKEN_OPTION: only with --rotate-token"
fi
command -v astro >/dev/null 2>&1 || die "astro: not installed or not on PATH; install the Astro CLI (https://www.astronomer.io/docs/astro/cli/install-cli) and run again"

CLOUD="$(setting CLOUD)"
POOL="$(setting REMOTE_POOL)"
POOL_SLOTS="$(setting REMOTE_POOL_SLOTS)"
CLUSTER_NAME="$(setting CLUSTER_NAME)"
PLACEHOLDER_SERVER="$(setting PLACEHOLDER_SERVER)"
CONNECTION_KEY="AIRFLOW_CONN_$(setting CONNECTION_ID | tr '[:lower:]' '[:upper:]')"
if "$ROTATE" && [ "$CLOUD" != generic ]; then
    die "--rotate-token: only generic clusters carry a ServiceAccount token; on $CLOUD the exec plugin makes a fresh token for every call, so there is nothing to rotate"
fi

# The connection to load must be the real one, written by scripts/setup_remote.sh.
check_connection_env() {
    local fix="run scripts/setup_remote.sh (or python3 scripts/write_connection.py) first"
    [ -f connection.env ] || die "connection.env is missing: $fix"
    grep -q "^$CONNECTION_KEY=" connection.env || die "connection.env has no $CONNECTION_KEY: $fix"
    if grep "^$CONNECTION_KEY=" connection.env | grep -qF "$PLACEHOLDER_SERVER"; then
        die "connection.env still has the example endpoint $PLACEHOLDER_SERVER: $fix"
    fi
    if [ "$CLOUD" = generic ]; then check_token; fi
    local dir key id
    for dir in ${CLUSTER_DIRS[@]+"${CLUSTER_DIRS[@]}"}; do
        key="AIRFLOW_CONN_$(setting CONNECTION_ID "$dir" | tr '[:lower:]' '[:upper:]')"
        id="$(setting CLUSTER_ID "$dir")"
        fix="run $dir/scripts/setup_remote.sh (or python3 $dir/scripts/write_connection.py) first"
        grep -q "^$key=" connection.env || die "connection.env has no $key (cluster $id): $fix"
        if grep "^$key=" connection.env | grep -qF "$PLACEHOLDER_SERVER"; then
            die "connection.env still has the example endpoint $PLACEHOLDER_SERVER for cluster $id: $fix"
        fi
        if [ "$(setting CLOUD "$dir")" = generic ]; then
            check_token "$key" "python3 $dir/scripts/write_connection.py --kubeconfig <admin kubeconfig>, then run this again" \
                " of cluster $id"
        fi
    done
}

# Generic clusters: the token in connection.env must not have expired; under a quarter of its
# lifetime left is worth a warning. Decoded without verifying (it is the cluster's to verify).
read -r -d '' TOKEN_REPORT <<'EOF' || true
import base64, json, shlex, sys, time
values = dict(item.split("=", 1) for item in shlex.split(open("connection.env").read(), comments=True))
extra = json.loads(values[sys.argv[1]])["extra"]
config = extra["kube_config"] if isinstance(extra["kube_config"], dict) else json.loads(extra["kube_config"])
try:
    payload = config["users"][0]["user"]["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    expires = float(claims["exp"])
except (IndexError, KeyError, TypeError, ValueError):
    sys.exit(0)  # not a JWT with an expiry: the preflight says so
left, lifetime = expires - time.time(), expires - float(claims.get("iat", expires))
state = "expired" if left <= 0 else "low" if lifetime > 0 and left < lifetime / 4 else "ok"
print(state, time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(expires)), f"{max(left, 0) / 3600:.1f}", f"{lifetime / 3600:.1f}")
EOF

# $1 the variable (default: the project's connection), $2 how to rotate it, $3 whose token it is.
check_token() {
    local report state until left lifetime key="${1:-$CONNECTION_KEY}" whose="${3:-}"
    local rotate="${2:-scripts/deploy.sh --deployment-id $DEPLOYMENT_ID --rotate-token}"
    report="$(python3 -c "$TOKEN_REPORT" "$key")"
    [ -n "$report" ] || return 0
    read -r state until left lifetime <<<"$report"
    case "$state" in
        expired) die "the ServiceAccount token$whose in connection.env expired at $until: $rotate" ;;
        low) say "WARNING: the ServiceAccount token$whose in connection.env has $left h of its $lifetime h left (until $until): rotate it soon: $rotate" ;;
        *) say "token: the ServiceAccount token$whose in connection.env is valid until $until ($left h of $lifetime h left)" ;;
    esac
}

# connection.env, as secret environment variables. `variable update --load` creates the keys
# the deployment lacks and updates the others (`create --load` would refuse existing keys).
# Secrets are write-only (`variable list` shows their keys, never their values), so the values
# cannot be compared first: the update always runs, and sets what is already there on a rerun.
load_variables() {
    local key
    astro_query deployment variable list --deployment-id "$DEPLOYMENT_ID" >"$WORK/variables"
    while IFS='=' read -r key _; do
        case "$key" in AIRFLOW_CONN_*) ;; *) continue ;; esac
        if awk -v k="$key" '$2 == k { found = 1 } END { exit !found }' "$WORK/variables"; then
            say "variable $key: in the deployment, set again from connection.env (secret values cannot be read back to compare)"
        else
            say "variable $key: not in the deployment, created from connection.env"
        fi
    done <connection.env
    change astro deployment variable update --deployment-id "$DEPLOYMENT_ID" --load --env connection.env --secret
    if "$DRY_RUN"; then return 0; fi
    astro_query deployment variable list --deployment-id "$DEPLOYMENT_ID" >"$WORK/variables"
    awk -v k="$CONNECTION_KEY" '$2 == k && $NF == "true" { found = 1 } END { exit !found }' "$WORK/variables" ||
        die "$CONNECTION_KEY is not a secret variable of deployment $DEPLOYMENT_ID after loading; check it in Astro (Environment)"
}

# The pool every remote pod runs in: tasks in a pool the deployment lacks are never scheduled.
# $1 $2 $3: an added cluster's pool, slots and description (default: the project's own pool).
ensure_pool() {
    local slots pool="${1:-$POOL}" pool_slots="${2:-$POOL_SLOTS}" description="${3:-Caps concurrent pods on the remote cluster $CLUSTER_NAME}"
    [ -f "$WORK/pools" ] || astro_query deployment pool list --deployment-id "$DEPLOYMENT_ID" >"$WORK/pools"
    slots="$(awk -v p="$pool" '$1 == p { print $2 }' "$WORK/pools")"
    if [ -z "$slots" ]; then
        change astro deployment pool create --deployment-id "$DEPLOYMENT_ID" --name "$pool" --slots "$pool_slots" \
            --description "$description"
    elif [ "$slots" != "$pool_slots" ]; then
        change astro deployment pool update --deployment-id "$DEPLOYMENT_ID" --name "$pool" --slots "$pool_slots" \
            --description "$description"
    else
        say "unchanged: pool $pool ($pool_slots slots)"
    fi
}

# Each added cluster's pool, named in its clusters/<pkg>/include/remote_cluster.py.
ensure_cluster_pools() {
    local dir id name description
    for dir in ${CLUSTER_DIRS[@]+"${CLUSTER_DIRS[@]}"}; do
        id="$(setting CLUSTER_ID "$dir")"
        name="$(setting CLUSTER_NAME "$dir")"
        description="Caps concurrent pods on the remote cluster $id"
        if [ "$name" != "$id" ]; then description="$description ($name)"; fi
        ensure_pool "$(setting REMOTE_POOL "$dir")" "$(setting REMOTE_POOL_SLOTS "$dir")" "$description"
    done
}

# Local checks first: the connection to load (a rotation writes it anew).
"$ROTATE" || check_connection_env
# Signed in, and the deployment exists: one read-only call, which also gives its Airflow URL.
URL="$(astro_query deployment inspect --deployment-id "$DEPLOYMENT_ID" --key metadata.webserver_url)"
case "$URL" in http*) ;; *) URL="https://$URL" ;; esac

if "$ROTATE"; then
    if "$DRY_RUN"; then
        python3 scripts/write_connection.py --dry-run ${TOKEN_ARGS[@]+"${TOKEN_ARGS[@]}"}
    else
        python3 scripts/write_connection.py ${TOKEN_ARGS[@]+"${TOKEN_ARGS[@]}"}
        check_connection_env
    fi
    if "$DRY_RUN" && [ ! -f connection.env ]; then
        printf 'would run:%s\n' "$(shown astro deployment variable update --deployment-id "$DEPLOYMENT_ID" --load --env connection.env --secret)"
    else
        load_variables
    fi
    printf '\nnext: nothing to deploy for a new token: it lives in the environment variable %s, not in the image.\n' "$CONNECTION_KEY"
    printf 'Trigger check_remote_cluster at %s to see the time left.\n' "$URL"
    exit 0
fi

load_variables
ensure_pool
ensure_cluster_pools
change astro deploy "$DEPLOYMENT_ID"
# With added clusters, the preflight and the example that cover every cluster.
PREFLIGHT=check_remote_cluster
EXAMPLE=remote_kpo
if [ "${#CLUSTER_DIRS[@]}" -gt 0 ]; then PREFLIGHT=check_remote_clusters; EXAMPLE=remote_kpo_clusters; fi
printf '\nnext: trigger the preflight in the deployment: open %s, Dags > %s > Trigger;\n' "$URL" "$PREFLIGHT"
printf 'or with a Deployment API token:\n'
# shellcheck disable=SC2016  # $ASTRO_API_TOKEN is for the user's shell, printed as is
printf '  curl -X POST "%s" -H "Authorization: Bearer $ASTRO_API_TOKEN" -H "Content-Type: application/json" -d %s\n' \
    "$URL/api/v2/dags/$PREFLIGHT/dagRuns" "'{\"logical_date\": null}'"
printf 'When it reports ready, trigger %s.\n' "$EXAMPLE"
