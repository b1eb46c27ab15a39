################################################################################
# Operational alarms (recommended by the ops doc), notifying an SNS topic
################################################################################

resource "aws_cloudwatch_metric_alarm" "elb_unhealthy_hosts" {
  alarm_name          = "${local.name}-ElbUnHealthyHostCount"
  alarm_description   = "At least one instance fails the ELB health check HTTP:8080/heartbeat."
  namespace           = "AWS/ELB"
  metric_name         = "UnHealthyHostCount"
  statistic           = "Maximum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  period              = 60
  evaluation_periods  = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_sns_topic_arn]
  ok_actions          = [var.alarm_sns_topic_arn]
  tags                = local.tags

  dimensions = {
    LoadBalancerName = aws_elb.this.name
  }
}

resource "aws_cloudwatch_metric_alarm" "elb_backend_5xx" {
  alarm_name          = "${local.name}-ElbBackend5XX"
  alarm_description   = "More than ${var.elb_5xx_threshold} 5XX answers from the instances in 5 minutes."
  namespace           = "AWS/ELB"
  metric_name         = "HTTPCode_Backend_5XX"
  statistic           = "Sum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.elb_5xx_threshold
  period              = 300
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_sns_topic_arn]
  ok_actions          = [var.alarm_sns_topic_arn]
  tags                = local.tags

  dimensions = {
    LoadBalancerName = aws_elb.this.name
  }
}

resource "aws_cloudwatch_metric_alarm" "asg_in_service_below_min" {
  alarm_name          = "${local.name}-AsgInServiceBelowMin"
  alarm_description   = "Fewer instances InService than app_instance_min_count (${var.app_instance_min_count})."
  namespace           = "AWS/AutoScaling"
  metric_name         = "GroupInServiceInstances"
  statistic           = "Minimum"
  comparison_operator = "LessThanThreshold"
  threshold           = var.app_instance_min_count
  period              = 60
  evaluation_periods  = 5
  treat_missing_data  = "breaching"
  alarm_actions       = [var.alarm_sns_topic_arn]
  ok_actions          = [var.alarm_sns_topic_arn]
  tags                = local.tags

  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}
