################################################################################
# Instance role: least privilege for the service and its host units
################################################################################

data "aws_iam_policy_document" "assume_role" {
  statement {
    sid     = "Ec2AssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name_prefix        = "${local.name}-"
  description        = "vf-export ${var.environment} instances"
  assume_role_policy = data.aws_iam_policy_document.assume_role.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${local.name}-"
  role        = aws_iam_role.this.name
  tags        = local.tags
}

data "aws_iam_policy_document" "this" {
  # ECR: the login token call has no resource-level permissions.
  statement {
    sid       = "EcrLogin"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid    = "EcrPull"
    effect = "Allow"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = concat([aws_ecr_repository.this.arn], var.ecr_repository_arns)
  }

  # The service answers its own group's termination lifecycle hook. The ARN
  # is built from the group's name (not the resource) so that this policy,
  # which the instances need to boot, does not wait for the group.
  statement {
    sid       = "CompleteOwnLifecycleAction"
    effect    = "Allow"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = [local.asg_arn]
  }

  # Describe* has no resource-level permissions; read-only. The service
  # checks at start that its hook exists (a wrong name shows at once).
  statement {
    sid       = "DescribeLifecycleHooks"
    effect    = "Allow"
    actions   = ["autoscaling:DescribeLifecycleHooks"]
    resources = ["*"]
  }

  # S3: the four service buckets only.
  statement {
    sid    = "ServiceBucketsList"
    effect = "Allow"
    actions = [
      "s3:GetBucketLocation",
      "s3:ListBucket",
      "s3:ListBucketMultipartUploads",
    ]
    resources = local.service_bucket_arns
  }

  statement {
    sid    = "ServiceBucketsObjects"
    effect = "Allow"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
      "s3:GetObject",
      "s3:ListMultipartUploadParts",
      "s3:PutObject",
      "s3:PutObjectAcl",
    ]
    resources = [for arn in local.service_bucket_arns : "${arn}/*"]
  }

  # Partner buckets are reached through these two roles only.
  statement {
    sid     = "AssumePartnerRoles"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    resources = [
      var.sfmc_role_arn,
      var.tmol_role_arn,
    ]
  }

  # PutMetricData has no resource-level permissions; the namespace condition
  # limits it to the service's own namespace.
  statement {
    sid       = "PutServiceMetrics"
    effect    = "Allow"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.cloudwatch_namespace]
    }
  }

  statement {
    sid    = "ReadServiceSecrets"
    effect = "Allow"
    actions = [
      "ssm:GetParameter",
      "ssm:GetParameters",
      "ssm:GetParametersByPath",
    ]
    resources = [
      "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${var.ssm_parameter_path}",
      "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${var.ssm_parameter_path}/*",
    ]
  }

  dynamic "statement" {
    for_each = var.ssm_kms_key_arn == null ? [] : [var.ssm_kms_key_arn]

    content {
      sid       = "DecryptServiceSecrets"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_policy" "this" {
  name_prefix = "${local.name}-"
  description = "vf-export ${var.environment}: ECR pull, service buckets, SFMC/TMOL AssumeRole, metrics, SSM secrets, own lifecycle hook"
  policy      = data.aws_iam_policy_document.this.json
  tags        = local.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  role       = aws_iam_role.this.name
  policy_arn = aws_iam_policy.this.arn
}
