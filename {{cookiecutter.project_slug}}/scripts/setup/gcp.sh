# shellcheck shell=bash disable=SC2034  # IMPERSONATE, CONNECTION_ARGS, CLOUD_SHIFT: read by setup_remote.sh
# GKE side of scripts/setup_remote.sh: the deployment's service account may find the cluster
# (roles/container.clusterViewer, nothing more: project-level container.pods.* roles would
# reach every namespace), and Kubernetes RBAC in k8s/ grants the rest to its email.
PROJECT_ID="$(setting GCP_PROJECT_ID)"
LOCATION="$(setting GCP_LOCATION)"
IDENTITY="$(setting RUNNER_IDENTITY)"
VIEWER_ROLE=roles/container.clusterViewer
CONNECTION_ARGS=()
IMPERSONATE=(--as "$IDENTITY")

cloud_usage() { :; }
cloud_option() { return 1; }

cloud_identity() {
    query gcloud container clusters describe "$CLUSTER_NAME" --location "$LOCATION" \
        --project "$PROJECT_ID" --format 'value(name)' >/dev/null \
        || die "cluster $CLUSTER_NAME not found in $PROJECT_ID/$LOCATION; check gcloud auth login and the project's answers"
    local bound
    bound="$(query gcloud projects get-iam-policy "$PROJECT_ID" --flatten 'bindings[].members' \
        --filter "bindings.role=$VIEWER_ROLE AND bindings.members=serviceAccount:$IDENTITY" \
        --format 'value(bindings.role)')" || die "cannot read the IAM policy of $PROJECT_ID"
    if [ -n "$bound" ]; then
        say "unchanged: $IDENTITY has $VIEWER_ROLE"
    else
        change gcloud projects add-iam-policy-binding "$PROJECT_ID" \
            --member "serviceAccount:$IDENTITY" --role "$VIEWER_ROLE" --condition None
    fi
    change env KUBECONFIG="$ADMIN_KUBECONFIG" gcloud container clusters get-credentials "$CLUSTER_NAME" \
        --location "$LOCATION" --project "$PROJECT_ID"
}
