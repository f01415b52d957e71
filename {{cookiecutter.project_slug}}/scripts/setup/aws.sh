# shellcheck shell=bash disable=SC2034  # IMPERSONATE, CONNECTION_ARGS, CLOUD_SHIFT: read by setup_remote.sh
# EKS side of scripts/setup_remote.sh: the runner IAM role (trusted only by the Astro
# deployment, with the ExternalId), the cluster (only with --create-cluster) and the access
# entry that puts the role in the Kubernetes group k8s/rolebinding.yaml binds.
REGION="$(setting AWS_REGION)"
ROLE_ARN="$(setting RUNNER_ROLE_ARN)"
ROLE_NAME="$(setting RUNNER_ROLE_NAME)"
GROUP="$(setting K8S_GROUP)"
CREATE_CLUSTER=false
CLUSTER_CREATED=false
CONNECTION_ARGS=()
# EKS names an assumed role like this; the group comes from the access entry.
IMPERSONATE=(--as "$(setting RUNNER_SESSION_USER)" --as-group "$GROUP")

GPU_NODE_GROUP="$(setting GPU_NODE_GROUP)"
POLICY_NAME=remote-kpo-runner

cloud_usage() {
    printf '  --create-cluster      create the cluster from aws/cluster.yaml if it does not exist\n'
}

cloud_option() {
    CLOUD_SHIFT=1
    case "$1" in
        --create-cluster) CREATE_CLUSTER=true ;;
        *) return 1 ;;
    esac
}

ensure_role() {
    local current
    if current="$(query aws iam get-role --role-name "$ROLE_NAME" \
        --query Role.AssumeRolePolicyDocument --output json)"; then
        if same_json "$current" aws/trust-policy.json; then
            say "unchanged: IAM role $ROLE_NAME"
        else
            change aws iam update-assume-role-policy --role-name "$ROLE_NAME" \
                --policy-document file://aws/trust-policy.json
        fi
    else
        # No permission policy: presigning an EKS token needs none.
        change aws iam create-role --role-name "$ROLE_NAME" \
            --assume-role-policy-document file://aws/trust-policy.json \
            --description "Runs KubernetesPodOperator pods on $CLUSTER_NAME for Airflow"
    fi
}

# What the runner role may do in AWS besides signing EKS tokens (which needs nothing):
# aws/runner-policy.json exists only with the native operator or the GPU node group DAG.
ensure_runner_policy() {
    local current
    [ -f aws/runner-policy.json ] || return 0
    if current="$(query aws iam get-role-policy --role-name "$ROLE_NAME" --policy-name "$POLICY_NAME" \
        --query PolicyDocument --output json)" && same_json "$current" aws/runner-policy.json; then
        say "unchanged: policy $POLICY_NAME of $ROLE_NAME"
    else
        change aws iam put-role-policy --role-name "$ROLE_NAME" --policy-name "$POLICY_NAME" \
            --policy-document file://aws/runner-policy.json
    fi
}

# The GPU nodes' own role (the standard EKS node policies, on the nodes only) and the
# service-linked role EKS needs once per account to manage node groups.
ensure_gpu_node_role() {
    local node_role attached policy
    [ "$GPU_NODE_GROUP" = True ] || return 0
    node_role="$(setting GPU_NODE_ROLE_NAME)"
    if query aws iam get-role --role-name "$node_role" --query Role.Arn --output text >/dev/null; then
        say "unchanged: IAM role $node_role"
    else
        change aws iam create-role --role-name "$node_role" \
            --assume-role-policy-document file://aws/gpu-node-trust-policy.json \
            --description "GPU nodes of the remote_kpo_gpu DAG on $CLUSTER_NAME"
    fi
    attached="$(query aws iam list-attached-role-policies --role-name "$node_role" \
        --query 'AttachedPolicies[].PolicyName' --output text || true)"
    for policy in AmazonEKSWorkerNodePolicy AmazonEKS_CNI_Policy AmazonEC2ContainerRegistryReadOnly; do
        case " $(printf '%s' "$attached" | tr '\t\n' '  ') " in
            *" $policy "*) say "unchanged: $node_role has $policy" ;;
            *) change aws iam attach-role-policy --role-name "$node_role" \
                   --policy-arn "arn:$(setting AWS_PARTITION):iam::aws:policy/$policy" ;;
        esac
    done
    if query aws iam get-role --role-name AWSServiceRoleForAmazonEKSNodegroup --query Role.Arn --output text >/dev/null; then
        say "unchanged: service-linked role AWSServiceRoleForAmazonEKSNodegroup"
    else
        change aws iam create-service-linked-role --aws-service-name eks-nodegroup.amazonaws.com
    fi
}

ensure_cluster() {
    local mode
    if mode="$(query aws eks describe-cluster --name "$CLUSTER_NAME" --region "$REGION" \
        --query cluster.accessConfig.authenticationMode --output text)"; then
        case "$mode" in
            API | API_AND_CONFIG_MAP) say "unchanged: cluster $CLUSTER_NAME (authentication mode $mode)" ;;
            *) die "cluster $CLUSTER_NAME: authentication mode $mode has no access entries; allowed: API or API_AND_CONFIG_MAP. This change is one-way, so it is yours to make: aws eks update-cluster-config --name $CLUSTER_NAME --region $REGION --access-config authenticationMode=API_AND_CONFIG_MAP" ;;
        esac
    elif "$CREATE_CLUSTER"; then
        # eksctl also creates the access entry listed in aws/cluster.yaml.
        change eksctl create cluster -f aws/cluster.yaml
        CLUSTER_CREATED=true
    else
        die "cluster $CLUSTER_NAME not found in $REGION; check --region/credentials, or run again with --create-cluster to create it from aws/cluster.yaml"
    fi
}

ensure_access_entry() {
    local groups
    if groups="$(query aws eks describe-access-entry --cluster-name "$CLUSTER_NAME" --region "$REGION" \
        --principal-arn "$ROLE_ARN" --query 'accessEntry.kubernetesGroups' --output text)"; then
        if [ "$groups" = "$GROUP" ]; then
            say "unchanged: access entry $ROLE_NAME -> $GROUP"
        else
            change aws eks update-access-entry --cluster-name "$CLUSTER_NAME" --region "$REGION" \
                --principal-arn "$ROLE_ARN" --kubernetes-groups "$GROUP"
        fi
    elif "$CLUSTER_CREATED"; then
        say "eksctl creates the access entry $ROLE_NAME -> $GROUP with the cluster"
    else
        change aws eks create-access-entry --region "$REGION" --cli-input-json file://aws/access-entry.json
    fi
}

cloud_identity() {
    ensure_role
    ensure_runner_policy
    ensure_gpu_node_role
    ensure_cluster
    ensure_access_entry
    change aws eks update-kubeconfig --name "$CLUSTER_NAME" --region "$REGION" \
        --kubeconfig "$ADMIN_KUBECONFIG" --alias "$CLUSTER_NAME-admin"
}
