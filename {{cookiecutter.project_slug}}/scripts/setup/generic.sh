# shellcheck shell=bash disable=SC2034  # IMPERSONATE, CONNECTION_ARGS, CLOUD_SHIFT, SIGN_IN: read by setup_remote.sh
# Any cluster: you are a cluster admin in a kubeconfig context; the pods' identity is the
# ServiceAccount in k8s/, and write_connection.py mints its short-lived token straight into
# the connection files (never printed).
SERVICE_ACCOUNT="$(setting SERVICE_ACCOUNT)"
SOURCE_KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"
CONTEXT=""
TOKEN_DURATION=""
IMPERSONATE=(--as "system:serviceaccount:$NAMESPACE:$SERVICE_ACCOUNT")

cloud_usage() {
    printf "  --kubeconfig PATH     an admin kubeconfig (default: \$KUBECONFIG or ~/.kube/config)\n"
    printf '  --context NAME        its context to use (default: the current one)\n'
    printf '  --token-duration D    lifetime of the ServiceAccount token, e.g. 24h (default), 12h, 90m\n'
}

cloud_option() {
    CLOUD_SHIFT=2
    [ "$#" -ge 2 ] || return 1
    case "$1" in
        --kubeconfig) SOURCE_KUBECONFIG="$2" ;;
        --context) CONTEXT="$2" ;;
        --token-duration)
            local re='^([0-9]+[hms])+$'
            [[ $2 =~ $re ]] || die "--token-duration: '$2' is not a duration; use e.g. 24h, 12h or 90m (kubectl create token --duration)"
            TOKEN_DURATION="$2" ;;
        *) return 1 ;;
    esac
}

cloud_tools() { echo kubectl; }

# Your kubeconfig is your sign-in. --local-developer needs nothing here: the connection
# carries the ServiceAccount token, which works the same from your machine.
SIGN_IN="give a kubeconfig whose context is a cluster admin (--kubeconfig PATH --context NAME)"
cloud_signed_in() {
    [ -f "$SOURCE_KUBECONFIG" ] || die "--kubeconfig: $SOURCE_KUBECONFIG does not exist; give an admin kubeconfig, e.g. --kubeconfig ~/.kube/config"
    if "$LOCAL_DEVELOPER"; then
        say "local developer: nothing to admit; the connection's ServiceAccount token works from your machine too"
    fi
}
cloud_verify_developer() { :; }

cloud_identity() {
    CONNECTION_ARGS=(--kubeconfig "$SOURCE_KUBECONFIG")
    [ -z "$CONTEXT" ] || CONNECTION_ARGS+=(--context "$CONTEXT")
    [ -z "$TOKEN_DURATION" ] || CONNECTION_ARGS+=(--token-duration "$TOKEN_DURATION")
    KUBECTL=(kubectl --kubeconfig "$SOURCE_KUBECONFIG")
    [ -z "$CONTEXT" ] || KUBECTL+=(--context "$CONTEXT")
}
