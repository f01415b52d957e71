# shellcheck shell=bash disable=SC2034  # IMPERSONATE, CONNECTION_ARGS, CLOUD_SHIFT, SIGN_IN, DEVELOPER_NAME: read by setup_remote.sh
# EKS side of scripts/setup_remote.sh: the runner IAM role (trusted only by the Astro
# deployment, with the ExternalId), the cluster (only with --create-cluster) and the access
# entry that puts the role in the Kubernetes group k8s/rolebinding.yaml binds. With
# --local-developer the role also trusts you (same ExternalId), so that a local run, signed
# in as you, assumes it as the deployment does: EKS then sees the same runner session.
REGION="$(setting AWS_REGION)"
ACCOUNT_ID="$(setting AWS_ACCOUNT_ID)"
ROLE_ARN="$(setting RUNNER_ROLE_ARN)"
ROLE_NAME="$(setting RUNNER_ROLE_NAME)"
EXTERNAL_ID="$(setting RUNNER_EXTERNAL_ID)"
SESSION_NAME="$(setting RUNNER_SESSION_NAME)"
GROUP="$(setting K8S_GROUP)"
CREATE_CLUSTER=false
CLUSTER_CREATED=false
TRUST_CHANGED=false
CONNECTION_ARGS=()
# EKS names an assumed role like this; the group comes from the access entry.
IMPERSONATE=(--as "$(setting RUNNER_SESSION_USER)" --as-group "$GROUP")
SIGN_IN="sign in to account $ACCOUNT_ID (aws sso login --profile <profile>, or aws configure) and pick that profile (AWS_PROFILE=<profile>)"
# With --local-developer: your IAM user or role (for an SSO session, its role, not the session).
DEVELOPER_ARN=""

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

cloud_tools() {
    printf '%s\n' aws kubectl
    if "$CREATE_CLUSTER"; then echo eksctl; fi
}

# Signed in, to the project's account; with --local-developer, who to trust.
cloud_signed_in() {
    local account arn role
    query aws sts get-caller-identity --query '[Account, Arn]' --output text \
        || die "aws sts get-caller-identity: no identity; $SIGN_IN, then run again"
    read -r account arn <<<"$QUERY_OUT"
    [ "$account" = "$ACCOUNT_ID" ] || die "aws: signed in to account $account as $arn, but this project's aws_account_id is $ACCOUNT_ID; $SIGN_IN, then run again"
    say "signed in: $arn"
    "$LOCAL_DEVELOPER" || return 0
    case "$arn" in
        arn:*:sts::*:assumed-role/*)
            # Trust the role (with its path, as IAM stores it), not this one session.
            role="${arn#*:assumed-role/}"
            role="${role%%/*}"
            query aws iam get-role --role-name "$role" --query Role.Arn --output text \
                || die "--local-developer: the role $role of your session is not in account $ACCOUNT_ID; sign in as an IAM user or role of it, then run again"
            DEVELOPER_ARN="$QUERY_OUT" ;;
        arn:*:iam::*:user/*) DEVELOPER_ARN="$arn" ;;
        arn:*:iam::*:root) die "--local-developer: you are signed in as the root user of account $ACCOUNT_ID, and trusting it would admit every identity of the account; sign in as an IAM user or role (e.g. your SSO role), then run again" ;;
        *) die "--local-developer: $arn is not an IAM user or role session; sign in as one, then run again" ;;
    esac
    DEVELOPER_NAME="$DEVELOPER_ARN"
    say "local developer: $DEVELOPER_ARN (trusted by $ROLE_NAME with ExternalId $EXTERNAL_ID)"
}

# The trust policy wanted: aws/trust-policy.json, plus the statements --local-developer added
# before (kept, Sid LocalDeveloper...), plus yours now. $1 is the current policy ("" if none).
trust_policy() {
    python3 -c 'import hashlib, json, sys
current, rendered, developer = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
kept = [s for s in (json.loads(current)["Statement"] if current else [])
        if str(s.get("Sid", "")).startswith("LocalDeveloper")]
if developer:
    sid = "LocalDeveloper" + hashlib.sha256(developer.encode()).hexdigest()[:12]
    mine = dict(rendered["Statement"][0], Sid=sid, Principal={"AWS": developer})
    sids = [s.get("Sid") for s in kept]
    if sid in sids:
        kept[sids.index(sid)] = mine
    else:
        kept.append(mine)
print(json.dumps(dict(rendered, Statement=rendered["Statement"] + kept), indent=2))' "$1" aws/trust-policy.json "$DEVELOPER_ARN"
}

ensure_role() {
    local wanted="$WORK/trust-policy.json" file=aws/trust-policy.json current=""
    if query aws iam get-role --role-name "$ROLE_NAME" --query Role.AssumeRolePolicyDocument --output json; then
        current="$QUERY_OUT"
    fi
    trust_policy "$current" >"$wanted"
    # The project's own file when that is all it trusts, so that the plan names it.
    same_json "$(cat "$wanted")" aws/trust-policy.json || file="$wanted"
    if [ -n "$current" ]; then
        if same_json "$current" "$wanted"; then
            say "unchanged: IAM role $ROLE_NAME"
        else
            change aws iam update-assume-role-policy --role-name "$ROLE_NAME" --policy-document "file://$file"
            TRUST_CHANGED=true
        fi
    else
        # No permission policy: presigning an EKS token needs none.
        change aws iam create-role --role-name "$ROLE_NAME" \
            --assume-role-policy-document "file://$file" \
            --description "Runs KubernetesPodOperator pods on $CLUSTER_NAME for Airflow"
        TRUST_CHANGED=true
    fi
    if [ "$file" != aws/trust-policy.json ]; then
        say "  trusts aws/trust-policy.json and, for local runs: $(python3 -c 'import json, sys
print(", ".join(s["Principal"]["AWS"] for s in json.load(open(sys.argv[1]))["Statement"][1:]))' "$wanted")"
    fi
}

# What the runner role may do in AWS besides signing EKS tokens (which needs nothing):
# aws/runner-policy.json exists only with the native operator or the GPU node group DAG.
ensure_runner_policy() {
    [ -f aws/runner-policy.json ] || return 0
    if query aws iam get-role-policy --role-name "$ROLE_NAME" --policy-name "$POLICY_NAME" \
        --query PolicyDocument --output json && same_json "$QUERY_OUT" aws/runner-policy.json; then
        say "unchanged: policy $POLICY_NAME of $ROLE_NAME"
    else
        change aws iam put-role-policy --role-name "$ROLE_NAME" --policy-name "$POLICY_NAME" \
            --policy-document file://aws/runner-policy.json
    fi
}

# The GPU nodes' own role (the standard EKS node policies, on the nodes only) and the
# service-linked role EKS needs once per account to manage node groups.
ensure_gpu_node_role() {
    local node_role attached="" policy
    [ "$GPU_NODE_GROUP" = True ] || return 0
    node_role="$(setting GPU_NODE_ROLE_NAME)"
    if query aws iam get-role --role-name "$node_role" --query Role.Arn --output text; then
        say "unchanged: IAM role $node_role"
        query aws iam list-attached-role-policies --role-name "$node_role" \
            --query 'AttachedPolicies[].PolicyName' --output text && attached="$QUERY_OUT"
    else
        change aws iam create-role --role-name "$node_role" \
            --assume-role-policy-document file://aws/gpu-node-trust-policy.json \
            --description "GPU nodes of the remote_kpo_gpu DAG on $CLUSTER_NAME"
    fi
    for policy in AmazonEKSWorkerNodePolicy AmazonEKS_CNI_Policy AmazonEC2ContainerRegistryReadOnly; do
        case " $(printf '%s' "$attached" | tr '\t\n' '  ') " in
            *" $policy "*) say "unchanged: $node_role has $policy" ;;
            *) change aws iam attach-role-policy --role-name "$node_role" \
                   --policy-arn "arn:$(setting AWS_PARTITION):iam::aws:policy/$policy" ;;
        esac
    done
    if query aws iam get-role --role-name AWSServiceRoleForAmazonEKSNodegroup --query Role.Arn --output text; then
        say "unchanged: service-linked role AWSServiceRoleForAmazonEKSNodegroup"
    else
        change aws iam create-service-linked-role --aws-service-name eks-nodegroup.amazonaws.com
    fi
}

# Read only, before any change: the cluster exists with access entries, or may be created.
CLUSTER_EXISTS=false
check_cluster() {
    if query aws eks describe-cluster --name "$CLUSTER_NAME" --region "$REGION" \
        --query cluster.accessConfig.authenticationMode --output text; then
        case "$QUERY_OUT" in
            API | API_AND_CONFIG_MAP) CLUSTER_EXISTS=true
                say "unchanged: cluster $CLUSTER_NAME (authentication mode $QUERY_OUT)" ;;
            *) die "cluster $CLUSTER_NAME: authentication mode $QUERY_OUT has no access entries; allowed: API or API_AND_CONFIG_MAP. This change is one-way, so it is yours to make: aws eks update-cluster-config --name $CLUSTER_NAME --region $REGION --access-config authenticationMode=API_AND_CONFIG_MAP" ;;
        esac
    elif ! "$CREATE_CLUSTER"; then
        die "cluster $CLUSTER_NAME not found in $REGION of account $ACCOUNT_ID; check the project's cluster_name and aws_region answers, or run again with --create-cluster to create it from aws/cluster.yaml"
    fi
}

# After the role exists: eksctl also creates the access entry listed in aws/cluster.yaml.
ensure_cluster() {
    "$CLUSTER_EXISTS" && return 0
    change eksctl create cluster -f aws/cluster.yaml
    CLUSTER_CREATED=true
}

ensure_access_entry() {
    if "$CLUSTER_CREATED"; then
        say "eksctl creates the access entry $ROLE_NAME -> $GROUP with the cluster"
    elif query aws eks describe-access-entry --cluster-name "$CLUSTER_NAME" --region "$REGION" \
        --principal-arn "$ROLE_ARN" --query 'accessEntry.kubernetesGroups' --output text; then
        if [ "$QUERY_OUT" = "$GROUP" ]; then
            say "unchanged: access entry $ROLE_NAME -> $GROUP"
        else
            change aws eks update-access-entry --cluster-name "$CLUSTER_NAME" --region "$REGION" \
                --principal-arn "$ROLE_ARN" --kubernetes-groups "$GROUP"
        fi
    else
        change aws eks create-access-entry --region "$REGION" --cli-input-json file://aws/access-entry.json
    fi
}

# docker-compose.override.yml mounts ~/.aws/sso/cache read-write (botocore rewrites an SSO
# token it refreshes); made here, as you, so that Docker does not create it as root.
ensure_sso_cache_dir() {
    if [ -d "$HOME/.aws/sso/cache" ]; then
        say "unchanged: $HOME/.aws/sso/cache"
    else
        change mkdir -p "$HOME/.aws/sso/cache"
    fi
}

cloud_identity() {
    check_cluster
    ensure_role
    ensure_runner_policy
    ensure_gpu_node_role
    ensure_cluster
    ensure_access_entry
    if "$LOCAL_DEVELOPER"; then ensure_sso_cache_dir; fi
    change aws eks update-kubeconfig --name "$CLUSTER_NAME" --region "$REGION" \
        --kubeconfig "$ADMIN_KUBECONFIG" --alias "$CLUSTER_NAME-admin"
}

# With --local-developer: you may assume the runner role with its ExternalId, as the token
# plugin does locally (EKS then sees the runner session, checked in the table). Right after a
# trust change IAM may take a few seconds to agree, so a fresh change is retried.
cloud_verify_developer() {
    local tries=1 assume
    [ -n "$DEVELOPER_ARN" ] || return 0
    assume=(aws sts assume-role --role-arn "$ROLE_ARN" --role-session-name "$SESSION_NAME"
            --external-id "$EXTERNAL_ID" --query Credentials.Expiration --output text)
    if "$DRY_RUN"; then
        printf 'would run:%s\n' "$(shown "${assume[@]}")"
        return 0
    fi
    if "$TRUST_CHANGED"; then tries=6; fi
    while ! "${assume[@]}" >/dev/null 2>"$WORK/assume.err"; do
        tries=$((tries - 1))
        if [ "$tries" -eq 0 ]; then
            indented "$WORK/assume.err"
            printf 'sts:AssumeRole %s as %s: FAIL\n' "$ROLE_NAME" "$DEVELOPER_ARN"
            return 1
        fi
        sleep 5
    done
    printf 'sts:AssumeRole %s as %s: PASS\n' "$ROLE_NAME" "$DEVELOPER_ARN"
}
