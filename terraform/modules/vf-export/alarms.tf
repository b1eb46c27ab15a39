################################################################################
# Operational alarms: what Prometheus cannot see from inside the instances
# (the ELB's view, the group's size, the backlog age as CloudWatch sees it),
# all notifying one SNS topic. Every alarm description ends with its section
# of docs/runbook.md; tests/suite/monitoring.rs checks that each resolves.
#
# The Prometheus alerts (monitoring/prometheus/alerts.yml) watch the service
# from its own metrics; these keep working when Prometheus or the instances
# themselves are gone.
################################################################################

# One topic for every operational alarm; who hears it is var.alarm_subscriptions.
resource "aws_sns_topic" "alarms" {
  name              = "${local.name}-alarms"
  kms_master_key_id = aws_kms_key.alarms.arn
  tags              = local.tags
}

resource "aws_sns_topic_subscription" "alarms" {
  for_each = { for s in var.alarm_subscriptions : "${s.protocol}:${s.endpoint}" => s }

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = each.value.protocol
  endpoint  = each.value.endpoint
  # PagerDuty / Opsgenie style HTTPS endpoints confirm the subscription
  # themselves; email subscriptions wait for the recipient's click.
  endpoint_auto_confirms = contains(["http", "https"], each.value.protocol)
}

# The topic is encrypted with a key of its own: CloudWatch cannot publish to a
# topic under the AWS managed aws/sns key, whose policy does not admit it.
data "aws_iam_policy_document" "alarms_kms" {
  #checkov:skip=CKV_AWS_109:This is a KMS key policy: Resource "*" means the key itself, and administration is the account root's, as in AWS's default key policy.
  #checkov:skip=CKV_AWS_111:This is a KMS key policy: Resource "*" means the key itself; CloudWatch gets only Decrypt and GenerateDataKey*.
  #checkov:skip=CKV_AWS_356:This is a KMS key policy: Resource "*" means the key itself (a key policy cannot name its own key).
  statement {
    sid       = "AccountAdministers"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchAlarmsPublish"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "alarms" {
  description             = "${local.name}: encrypts the alarms SNS topic (CloudWatch may publish)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.alarms_kms.json
  tags                    = local.tags
}

resource "aws_kms_alias" "alarms" {
  name          = "alias/${local.name}-alarms"
  target_key_id = aws_kms_key.alarms.key_id
}

# An instance in the ELB that has failed its health check for 10 minutes. Not
# 3: every new instance (a rollout, a scale-out, a replacement) is OutOfService
# while it boots, pulls its image and passes 3 checks 30 s apart, which takes
# several minutes and is no news. The ASG replaces an unhealthy instance; one
# that stays unhealthy this long is a replacement loop.
resource "aws_cloudwatch_metric_alarm" "elb_unhealthy_hosts" {
  alarm_name          = "${local.name}-ElbUnHealthyHostCount"
  alarm_description   = "An instance has failed the ELB health check HTTP:8080/heartbeat for 10 minutes. Runbook: docs/runbook.md#elbunhealthyhostcount"
  namespace           = "AWS/ELB"
  metric_name         = "UnHealthyHostCount"
  statistic           = "Maximum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  period              = 60
  evaluation_periods  = 10
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags

  dimensions = {
    LoadBalancerName = aws_elb.this.name
  }
}

# The page for "the service is down": fewer healthy instances behind the ELB
# than the group's minimum. Maximum over the ELB's nodes: even the node that
# sees the most healthy instances sees too few. No data (nothing registered)
# counts as breaching.
resource "aws_cloudwatch_metric_alarm" "elb_healthy_hosts_below_min" {
  alarm_name          = "${local.name}-ElbHealthyHostsBelowMin"
  alarm_description   = "Fewer healthy instances behind the ELB than app_instance_min_count (${var.app_instance_min_count}) for 3 minutes: requests fail. Runbook: docs/runbook.md#elbhealthyhostsbelowmin"
  namespace           = "AWS/ELB"
  metric_name         = "HealthyHostCount"
  statistic           = "Maximum"
  comparison_operator = "LessThanThreshold"
  threshold           = var.app_instance_min_count
  period              = 60
  evaluation_periods  = 3
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags

  dimensions = {
    LoadBalancerName = aws_elb.this.name
  }
}

resource "aws_cloudwatch_metric_alarm" "elb_backend_5xx" {
  alarm_name          = "${local.name}-ElbBackend5XX"
  alarm_description   = "More than ${var.elb_5xx_threshold} 5XX answers from the instances in 5 minutes. Runbook: docs/runbook.md#elbbackend5xx"
  namespace           = "AWS/ELB"
  metric_name         = "HTTPCode_Backend_5XX"
  statistic           = "Sum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.elb_5xx_threshold
  period              = 300
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags

  dimensions = {
    LoadBalancerName = aws_elb.this.name
  }
}

# 5XX the ELB answers itself (502 a broken backend connection, 503 no healthy
# instance, 504 a request past the 60 s idle timeout): the service never sees
# these requests, so its own metrics cannot count them.
resource "aws_cloudwatch_metric_alarm" "elb_generated_5xx" {
  alarm_name          = "${local.name}-ElbGenerated5XX"
  alarm_description   = "More than ${var.elb_5xx_threshold} 5XX answered by the ELB itself (no healthy instance, backend connection errors, idle timeout) in 5 minutes. Runbook: docs/runbook.md#elbgenerated5xx"
  namespace           = "AWS/ELB"
  metric_name         = "HTTPCode_ELB_5XX"
  statistic           = "Sum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.elb_5xx_threshold
  period              = 300
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags

  dimensions = {
    LoadBalancerName = aws_elb.this.name
  }
}

resource "aws_cloudwatch_metric_alarm" "asg_in_service_below_min" {
  alarm_name          = "${local.name}-AsgInServiceBelowMin"
  alarm_description   = "Fewer instances InService than app_instance_min_count (${var.app_instance_min_count}) for 5 minutes. Runbook: docs/runbook.md#asginservicebelowmin"
  namespace           = "AWS/AutoScaling"
  metric_name         = "GroupInServiceInstances"
  statistic           = "Minimum"
  comparison_operator = "LessThanThreshold"
  threshold           = var.app_instance_min_count
  period              = 60
  evaluation_periods  = 5
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags

  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}

# The oldest PENDING export's wait, published every 60 s by each instance
# (ExportBacklogAge, seconds; queue-wide, hence Maximum). No data counts as
# breaching: every running instance publishes, even 0, so silence means no
# instance publishes with this dimension (none running, or CLOUDWATCH_NAMESPACE
# / ASG_NAME missing from /etc/vf-export.env) and the backlog is unwatched.
resource "aws_cloudwatch_metric_alarm" "export_backlog_age" {
  alarm_name          = "${local.name}-ExportBacklogAge"
  alarm_description   = "The oldest PENDING export has waited more than ${var.backlog_age_alarm_threshold} s for 5 minutes, or no instance publishes ExportBacklogAge. Runbook: docs/runbook.md#exportbacklogage"
  namespace           = var.cloudwatch_namespace
  metric_name         = "ExportBacklogAge"
  statistic           = "Maximum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.backlog_age_alarm_threshold
  period              = 60
  evaluation_periods  = 5
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags

  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}
