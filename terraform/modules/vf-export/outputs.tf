output "elb_dns_name" {
  description = "DNS name of the internal ELB."
  value       = aws_elb.this.dns_name
}

output "elb_name" {
  description = "Name of the ELB (aws elb describe-instance-health --load-balancer-name ...)."
  value       = aws_elb.this.name
}

output "dns_name" {
  description = "Service name: the Route 53 alias to the ELB."
  value       = aws_route53_record.this.fqdn
}

output "asg_name" {
  description = "Name of the Auto Scaling Group (instance refresh, set-desired-capacity)."
  value       = aws_autoscaling_group.this.name
}

output "launch_template_id" {
  description = "ID of the launch template."
  value       = aws_launch_template.this.id
}

output "iam_role_arn" {
  description = "ARN of the instance role (trust it from the SFMC and TMOL roles)."
  value       = aws_iam_role.this.arn
}

output "iam_role_name" {
  description = "Name of the instance role."
  value       = aws_iam_role.this.name
}

output "app_security_group_id" {
  description = "Security group of the instances (allow it on MongoDB 27017)."
  value       = aws_security_group.app.id
}

output "ecr_repository_url" {
  description = "ECR repository of the service image: push scripts/image's image here (docs/deploy.md)."
  value       = aws_ecr_repository.this.repository_url
}

output "vf_export_image" {
  description = "The image the instances run (repository and immutable tag or digest)."
  value       = local.vf_export_image
}

output "lifecycle_hook_name" {
  description = "The EC2_INSTANCE_TERMINATING lifecycle hook the service answers (ASG_LIFECYCLE_HOOK)."
  value       = aws_autoscaling_lifecycle_hook.terminating.name
}

output "alarm_sns_topic_arn" {
  description = "SNS topic of the operational alarms (subscribe more endpoints with var.alarm_subscriptions)."
  value       = aws_sns_topic.alarms.arn
}
