# shellcheck shell=bash disable=SC2034  # IMPERSONATE, CONNECTION_ARGS, CLOUD_SHIFT: read by setup_remote.sh
# AKS side of scripts/setup_remote.sh: federated credentials that let the Astro deployment's
# service accounts sign in as the managed identity (no secret anywhere), and Kubernetes RBAC
# in k8s/ on the identity's object id. No Azure role on the cluster is needed for the pods.
SUBSCRIPTION="$(setting AZURE_SUBSCRIPTION_ID)"
RESOURCE_GROUP="$(setting AZURE_RESOURCE_GROUP)"
CLIENT_ID="$(setting AZURE_IDENTITY_CLIENT_ID)"
OBJECT_ID="$(setting AZURE_IDENTITY_OBJECT_ID)"
ISSUER=""
SUBJECTS=()
CONNECTION_ARGS=()
IMPERSONATE=(--as "$OBJECT_ID")

cloud_usage() {
    printf '  --issuer URL          the Astro deployment'"'"'s OIDC issuer (Deployment > Details > Workload identity)\n'
    printf '  --subject SUBJECT     a service account subject to federate; repeat for scheduler, worker, triggerer\n'
    printf '  --skip-federation     the identity is already federated with the deployment\n'
}

cloud_option() {
    CLOUD_SHIFT=2
    case "$1" in
        --issuer) [ "$#" -ge 2 ] || die "--issuer: needs a URL, e.g. --issuer https://issuer.example.com/abc"; ISSUER="$2" ;;
        --subject) [ "$#" -ge 2 ] || die "--subject: needs a subject, e.g. --subject system:serviceaccount:ns:worker"; SUBJECTS+=("$2") ;;
        --skip-federation) CLOUD_SHIFT=1; SKIP_FEDERATION=true ;;
        *) return 1 ;;
    esac
}

# A federated credential name Azure accepts (3-120 of [A-Za-z0-9_-]) that is the same on every run.
credential_name() {
    local name
    name="astro-$(printf '%s' "$1" | tr -c 'A-Za-z0-9_-' '-')"
    printf '%s' "${name:0:120}"
}

federate() {
    local identity_name identity_group subject existing
    read -r identity_name identity_group < <(query az identity list --subscription "$SUBSCRIPTION" \
        --query "[?clientId=='$CLIENT_ID'].[name, resourceGroup]" --output tsv || true) || true
    [ -n "${identity_name:-}" ] || die "no managed identity with client id $CLIENT_ID in subscription $SUBSCRIPTION; check az login and the project's answers"
    for subject in "${SUBJECTS[@]}"; do
        existing="$(query az identity federated-credential list --subscription "$SUBSCRIPTION" \
            --resource-group "$identity_group" --identity-name "$identity_name" \
            --query "[?issuer=='$ISSUER' && subject=='$subject'].name" --output tsv || true)"
        if [ -n "$existing" ]; then
            say "unchanged: federated credential $existing ($subject)"
        else
            change az identity federated-credential create --subscription "$SUBSCRIPTION" \
                --resource-group "$identity_group" --identity-name "$identity_name" \
                --name "$(credential_name "$subject")" --issuer "$ISSUER" --subject "$subject" \
                --audiences api://AzureADTokenExchange
        fi
    done
}

cloud_identity() {
    if [ "${SKIP_FEDERATION:-false}" = false ]; then
        [ -n "$ISSUER" ] && [ "${#SUBJECTS[@]}" -gt 0 ] \
            || die "--issuer/--subject: the deployment's OIDC issuer and at least one subject are required (Astro: Deployment > Details > Workload identity), e.g. --issuer https://issuer.example.com/abc --subject system:serviceaccount:ns:worker; or --skip-federation"
        federate
    fi
    query az aks show --subscription "$SUBSCRIPTION" --resource-group "$RESOURCE_GROUP" \
        --name "$CLUSTER_NAME" --query id --output tsv >/dev/null \
        || die "cluster $CLUSTER_NAME not found in $RESOURCE_GROUP; check az login and the project's answers"
    change az aks get-credentials --subscription "$SUBSCRIPTION" --resource-group "$RESOURCE_GROUP" \
        --name "$CLUSTER_NAME" --file "$ADMIN_KUBECONFIG"
    # Entra ID clusters: sign the admin in with the Azure CLI login, not a device code.
    change kubelogin convert-kubeconfig --login azurecli --kubeconfig "$ADMIN_KUBECONFIG"
}
