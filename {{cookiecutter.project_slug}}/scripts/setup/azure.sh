# shellcheck shell=bash disable=SC2034  # IMPERSONATE, CONNECTION_ARGS, CLOUD_SHIFT, SIGN_IN: read by setup_remote.sh
# AKS side of scripts/setup_remote.sh: federated credentials that let the Astro deployment's
# service accounts sign in as the managed identity (no secret anywhere), and Kubernetes RBAC
# in k8s/ on the identity's object id. No Azure role on the cluster is needed for the pods.
# With --local-developer a RoleBinding of its own binds the same Role to the signed-in user
# or service principal (object id; a user's principal name too).
SUBSCRIPTION="$(setting AZURE_SUBSCRIPTION_ID)"
RESOURCE_GROUP="$(setting AZURE_RESOURCE_GROUP)"
TENANT_ID="$(setting AZURE_TENANT_ID)"
CLIENT_ID="$(setting AZURE_IDENTITY_CLIENT_ID)"
OBJECT_ID="$(setting AZURE_IDENTITY_OBJECT_ID)"
ISSUER=""
SUBJECTS=()
CONNECTION_ARGS=()
IMPERSONATE=(--as "$OBJECT_ID")
SIGN_IN="run az login (az login --tenant $TENANT_ID) with an account of subscription $SUBSCRIPTION"

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

cloud_tools() { printf '%s\n' az kubelogin kubectl; }

# Signed in, with the project's subscription in the project's tenant; with --local-developer,
# who to bind: a user by object id and principal name, a service principal by object id.
cloud_signed_in() {
    local status=0 subscription tenant name kind object_id upn
    if [ "${SKIP_FEDERATION:-false}" = false ]; then
        [ -n "$ISSUER" ] && [ "${#SUBJECTS[@]}" -gt 0 ] \
            || die "--issuer/--subject: the deployment's OIDC issuer and at least one subject are required (Astro: Deployment > Details > Workload identity), e.g. --issuer https://issuer.example.com/abc --subject system:serviceaccount:ns:worker; or --skip-federation"
    fi
    probe az account show --subscription "$SUBSCRIPTION" --query '[id, tenantId, user.name, user.type]' --output tsv \
        || status=$?
    [ "$status" -eq 0 ] || die "az: subscription $SUBSCRIPTION is not one the signed-in account can use; check the project's azure_subscription_id answer, or $SIGN_IN, then run again"
    { read -r subscription; read -r tenant; read -r name; read -r kind; } <<<"$QUERY_OUT"
    [ "$tenant" = "$TENANT_ID" ] || die "az: subscription $subscription is in tenant $tenant, but this project's azure_tenant_id is $TENANT_ID; render the project again with the right tenant, then run again"
    say "signed in: $name ($kind), subscription $subscription"
    "$LOCAL_DEVELOPER" || return 0
    if [ "$kind" = servicePrincipal ]; then
        query az ad sp show --id "$name" --query id --output tsv \
            || die "--local-developer: no service principal with app id $name in tenant $TENANT_ID; sign in as a user or service principal of it, then run again"
        object_id="$QUERY_OUT"
        developer_rolebinding "$object_id"
    else
        query az ad signed-in-user show --query '[id, userPrincipalName]' --output tsv \
            || die "--local-developer: your user was not found in tenant $TENANT_ID; $SIGN_IN, then run again"
        { read -r object_id; read -r upn; } <<<"$QUERY_OUT"
        developer_rolebinding "$object_id" "$upn"
    fi
}

# Your rows are in the can-i table (DEVELOPER_AS); nothing else to check.
cloud_verify_developer() { :; }

# A federated credential name Azure accepts (3-120 of [A-Za-z0-9_-]) that is the same on every run.
credential_name() {
    local name
    name="astro-$(printf '%s' "$1" | tr -c 'A-Za-z0-9_-' '-')"
    printf '%s' "${name:0:120}"
}

federate() {
    local identity_name identity_group subject existing
    identity_name=""
    if query az identity list --subscription "$SUBSCRIPTION" \
        --query "[?clientId=='$CLIENT_ID'].[name, resourceGroup]" --output tsv; then
        read -r identity_name identity_group <<<"$QUERY_OUT" || true
    fi
    [ -n "$identity_name" ] || die "no managed identity with client id $CLIENT_ID in subscription $SUBSCRIPTION; check the project's azure_identity_client_id answer, then run again"
    for subject in "${SUBJECTS[@]}"; do
        existing=""
        if query az identity federated-credential list --subscription "$SUBSCRIPTION" \
            --resource-group "$identity_group" --identity-name "$identity_name" \
            --query "[?issuer=='$ISSUER' && subject=='$subject'].name" --output tsv; then
            existing="$QUERY_OUT"
        fi
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
    # Read only, before any change.
    query az aks show --subscription "$SUBSCRIPTION" --resource-group "$RESOURCE_GROUP" \
        --name "$CLUSTER_NAME" --query id --output tsv \
        || die "cluster $CLUSTER_NAME not found in resource group $RESOURCE_GROUP; check the project's cluster_name and azure_resource_group answers, then run again"
    if [ "${SKIP_FEDERATION:-false}" = false ]; then federate; fi
    change az aks get-credentials --subscription "$SUBSCRIPTION" --resource-group "$RESOURCE_GROUP" \
        --name "$CLUSTER_NAME" --file "$ADMIN_KUBECONFIG"
    # Entra ID clusters: sign the admin in with the Azure CLI login, not a device code.
    change kubelogin convert-kubeconfig --login azurecli --kubeconfig "$ADMIN_KUBECONFIG"
}
