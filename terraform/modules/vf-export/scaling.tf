################################################################################
# CPU scaling (ops doc): CpuHigh -> +4 instances, CpuLow -> -1 instance
################################################################################

resource "aws_autoscaling_policy" "cpu_high" {
  name                   = "${local.name}-CpuHigh"
  autoscaling_group_name = aws_autoscaling_group.this.name
  policy_type            = "SimpleScaling"
  adjustment_type        = "ChangeInCapacity"
  scaling_adjustment     = var.scale_up_adjustment
  cooldown               = 300
}

resource "aws_autoscaling_policy" "cpu_low" {
  name                   = "${local.name}-CpuLow"
  autoscaling_group_name = aws_autoscaling_group.this.name
  policy_type            = "SimpleScaling"
  adjustment_type        = "ChangeInCapacity"
  scaling_adjustment     = var.scale_down_adjustment
  cooldown               = 300
}

resource "aws_cloudwatch_metric_alarm" "cpu_high" {
  alarm_name          = "${local.name}-CpuHigh"
  alarm_description   = "Average CPU of the ASG above ${var.cpu_high_threshold}% for ${var.cpu_high_evaluation_periods} x ${var.cpu_high_period}s: scale out."
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.cpu_high_threshold
  period              = var.cpu_high_period
  evaluation_periods  = var.cpu_high_evaluation_periods
  alarm_actions       = [aws_autoscaling_policy.cpu_high.arn]
  tags                = local.tags

  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}

resource "aws_cloudwatch_metric_alarm" "cpu_low" {
  alarm_name          = "${local.name}-CpuLow"
  alarm_description   = "Average CPU of the ASG below ${var.cpu_low_threshold}% for ${var.cpu_low_evaluation_periods} x ${var.cpu_low_period}s: scale in."
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  comparison_operator = "LessThanThreshold"
  threshold           = var.cpu_low_threshold
  period              = var.cpu_low_period
  evaluation_periods  = var.cpu_low_evaluation_periods
  alarm_actions       = [aws_autoscaling_policy.cpu_low.arn]
  tags                = local.tags

  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}

################################################################################
# Export backlog step scaling (off by default: enable_backlog_scaling)
#
# The service publishes ExportBacklog (PENDING exports, Count) every 60 s under
# CLOUDWATCH_NAMESPACE with the AutoScalingGroupName dimension. Every instance
# reports the same queue, hence Maximum. Scale-in stays with CpuLow.
################################################################################

resource "aws_autoscaling_policy" "export_backlog" {
  count = var.enable_backlog_scaling ? 1 : 0

  name                      = "${local.name}-ExportBacklog"
  autoscaling_group_name    = aws_autoscaling_group.this.name
  policy_type               = "StepScaling"
  adjustment_type           = "ChangeInCapacity"
  metric_aggregation_type   = "Maximum"
  estimated_instance_warmup = 300

  # Bounds are relative to the alarm threshold.
  step_adjustment {
    metric_interval_lower_bound = 0
    metric_interval_upper_bound = 50
    scaling_adjustment          = 1
  }

  step_adjustment {
    metric_interval_lower_bound = 50
    scaling_adjustment          = 2
  }
}

resource "aws_cloudwatch_metric_alarm" "export_backlog_high" {
  count = var.enable_backlog_scaling ? 1 : 0

  alarm_name          = "${local.name}-ExportBacklogHigh"
  alarm_description   = "More than ${var.backlog_scale_out_threshold} PENDING exports for 3 minutes: scale out."
  namespace           = var.cloudwatch_namespace
  metric_name         = "ExportBacklog"
  statistic           = "Maximum"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.backlog_scale_out_threshold
  period              = 60
  evaluation_periods  = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_autoscaling_policy.export_backlog[0].arn]
  tags                = local.tags

  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}
