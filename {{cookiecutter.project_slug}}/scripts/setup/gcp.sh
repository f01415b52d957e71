# shellcheck shell=bash disable=SC2034  # IMPERSONATE, CONNECTION_ARGS, CLOUD_SHIFT, SIGN_IN: read by setup_remote.sh
# GKE side of scripts/setup_remote.sh: the deployment's service account may find the cluster
# (roles/container.clusterViewer, nothing more: project-level container.pods.* roles would
# reach every namespace), and Kubernetes RBAC in k8s/ grants the rest to its email. With
# --local-developer a RoleBinding of its own binds the same Role to your Google account.
PROJECT_ID="$(setting GCP_PROJECT_ID)"
LOCATION="$(setting GCP_LOCATION)"
IDENTITY="$(setting RUNNER_IDENTITY)"
VIEWER_ROLE=roles/container.clusterViewer
CONNECTION_ARGS=()
IMPERSONATE=(--as "$IDENTITY")
SIGN_IN="run gcloud auth login (and, for local runs, gcloud auth application-default login) as an account of project $PROJECT_ID"

GPU_NODE_GROUP="$(setting GPU_NODE_GROUP)"

cloud_usage() { :; }
cloud_option() { return 1; }
cloud_tools() { printf '%s\n' gcloud kubectl; }

# Signed in, and the project is there for this account; with --local-developer, bind it too.
cloud_signed_in() {
    local account status=0
    query gcloud config get-value account
    account="$QUERY_OUT"
    [ -n "$account" ] || die "gcloud: no account is signed in; $SIGN_IN, then run again"
    probe gcloud projects describe "$PROJECT_ID" --format 'value(projectId)' || status=$?
    [ "$status" -eq 0 ] || die "gcloud: $account cannot see project $PROJECT_ID (it does not exist or is not theirs); check the project's gcp_project_id answer, or $SIGN_IN, then run again"
    say "signed in: $account (project $PROJECT_ID)"
    if "$LOCAL_DEVELOPER"; then developer_rolebinding "$account"; fi
}

# Your rows are in the can-i table (DEVELOPER_AS); nothing else to check.
cloud_verify_developer() { :; }

# The member holds the role on the project (or, with --sa, on that service account).
has_binding() {
    local role="$1" member="$2" bound
    shift 2
    query gcloud "$@" --flatten 'bindings[].members' \
        --filter "bindings.role=$role AND bindings.members=$member" --format 'value(bindings.role)' || return 1
    [ -n "$QUERY_OUT" ]
}

grant() {
    local role="$1" member="$2"
    if has_binding "$role" "$member" projects get-iam-policy "$PROJECT_ID"; then
        say "unchanged: $member has $role"
    else
        change gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "$member" --role "$role" --condition None
    fi
}

# dags/remote_kpo_gpu.py: the custom role of gcp/gpu-node-pools-role.yaml (its comment says
# why container.clusters.update, and what else it allows), and the GPU nodes' own service
# account, which the runner may attach to the nodes it creates.
ensure_gpu_node_pools() {
    local role_id node_sa wanted
    [ "$GPU_NODE_GROUP" = True ] || return 0
    role_id="$(setting GPU_CUSTOM_ROLE_ID)"
    node_sa="$(setting GPU_NODE_SERVICE_ACCOUNT)"
    wanted="$(sed -n 's/^  - //p' gcp/gpu-node-pools-role.yaml | sort | tr '\n' ' ')"
    if query gcloud iam roles describe "$role_id" --project "$PROJECT_ID" --format 'value(includedPermissions)'; then
        if [ "$(printf '%s' "$QUERY_OUT" | tr ';' '\n' | sort | tr '\n' ' ')" = "$wanted" ]; then
            say "unchanged: custom role $role_id"
        else
            change gcloud iam roles update "$role_id" --project "$PROJECT_ID" --file gcp/gpu-node-pools-role.yaml --quiet
        fi
    else
        change gcloud iam roles create "$role_id" --project "$PROJECT_ID" --file gcp/gpu-node-pools-role.yaml
    fi
    grant "projects/$PROJECT_ID/roles/$role_id" "serviceAccount:$IDENTITY"
    if query gcloud iam service-accounts describe "$node_sa" --project "$PROJECT_ID" --format 'value(email)'; then
        say "unchanged: service account $node_sa"
    else
        change gcloud iam service-accounts create "${node_sa%%@*}" --project "$PROJECT_ID" \
            --display-name "GPU nodes of the remote_kpo_gpu DAG"
    fi
    grant roles/container.defaultNodeServiceAccount "serviceAccount:$node_sa"
    if has_binding roles/iam.serviceAccountUser "serviceAccount:$IDENTITY" iam service-accounts get-iam-policy "$node_sa" --project "$PROJECT_ID"; then
        say "unchanged: $IDENTITY may attach $node_sa to nodes"
    else
        change gcloud iam service-accounts add-iam-policy-binding "$node_sa" --project "$PROJECT_ID" \
            --member "serviceAccount:$IDENTITY" --role roles/iam.serviceAccountUser
    fi
}

cloud_identity() {
    query gcloud container clusters describe "$CLUSTER_NAME" --location "$LOCATION" \
        --project "$PROJECT_ID" --format 'value(name)' \
        || die "cluster $CLUSTER_NAME not found in $PROJECT_ID/$LOCATION; check the project's cluster_name and gcp_location answers, then run again"
    grant "$VIEWER_ROLE" "serviceAccount:$IDENTITY"
    ensure_gpu_node_pools
    change env KUBECONFIG="$ADMIN_KUBECONFIG" gcloud container clusters get-credentials "$CLUSTER_NAME" \
        --location "$LOCATION" --project "$PROJECT_ID"
}
