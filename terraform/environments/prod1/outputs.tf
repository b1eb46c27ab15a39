output "elb_dns_name" {
  description = "DNS name of the internal ELB."
  value       = module.vf_export.elb_dns_name
}

output "elb_name" {
  description = "Name of the ELB."
  value       = module.vf_export.elb_name
}

output "dns_name" {
  description = "Service DNS name (Route 53 alias)."
  value       = module.vf_export.dns_name
}

output "asg_name" {
  description = "Name of the Auto Scaling Group."
  value       = module.vf_export.asg_name
}

output "iam_role_arn" {
  description = "ARN of the instance role."
  value       = module.vf_export.iam_role_arn
}

output "ecr_repository_url" {
  description = "ECR repository of the service image (docs/deploy.md: push here)."
  value       = module.vf_export.ecr_repository_url
}

output "vf_export_image" {
  description = "The image the instances run."
  value       = module.vf_export.vf_export_image
}

output "lifecycle_hook_name" {
  description = "The termination lifecycle hook the service answers."
  value       = module.vf_export.lifecycle_hook_name
}

output "alarm_sns_topic_arn" {
  description = "SNS topic of the operational alarms."
  value       = module.vf_export.alarm_sns_topic_arn
}
