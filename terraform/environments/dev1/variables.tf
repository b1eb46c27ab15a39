# Inputs of this environment; values in terraform.tfvars. Validation lives in
# the module (terraform/modules/vf-export/variables.tf).

variable "aws_account_id" {
  description = "Account this environment must be applied to (guards against a wrong profile)."
  type        = string
}

variable "environment" {
  description = "Environment name (dev1, prod1)."
  type        = string
}

variable "account_tier" {
  description = "nonprod or prod."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the service instances."
  type        = string
}

variable "app_instance_min_count" {
  description = "Minimum number of instances."
  type        = number
}

variable "app_instance_max_count" {
  description = "Maximum number of instances."
  type        = number
}

variable "enable_backlog_scaling" {
  description = "Scale out on the ExportBacklog metric as well as CPU."
  type        = bool
  default     = false
}

variable "runtime_hours" {
  description = "RuntimeHours tag value."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the service."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (two or more AZs)."
  type        = list(string)
}

variable "ssh_ingress_cidr_blocks" {
  description = "Internal CIDR blocks allowed to SSH."
  type        = list(string)
}

variable "mongodb_cidr_blocks" {
  description = "CIDR blocks of the MongoDB cluster."
  type        = list(string)
}

variable "flatcar_ami_owner" {
  description = "Publisher account of the Flatcar AMIs."
  type        = string
}

variable "key_name" {
  description = "EC2 key pair for SSH."
  type        = string
}

variable "acm_certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "elb_access_logs_bucket" {
  description = "Bucket receiving the ELB access logs."
  type        = string
}

variable "vf_export_image_tag" {
  description = "Image tag (or sha256: digest) of the service in this environment's ECR repository."
  type        = string
}

variable "fluentd_image" {
  description = "fluentd image with the Elasticsearch and concat plugins."
  type        = string
}

variable "falcon_sensor_image" {
  description = "CrowdStrike Falcon sensor image."
  type        = string
}

variable "ecr_repository_arns" {
  description = "ECR repositories the instances pull from."
  type        = list(string)
}

variable "ssm_parameter_path" {
  description = "SSM path of the service's secrets."
  type        = string
}

variable "elasticsearch_host" {
  description = "Elasticsearch endpoint for fluentd."
  type        = string
}

variable "exports_bucket_arn" {
  description = "Exports bucket ARN."
  type        = string
}

variable "scoring_bucket_arn" {
  description = "Scoring bucket ARN."
  type        = string
}

variable "vf_scoring_bucket_arn" {
  description = "vf-scoring bucket ARN."
  type        = string
}

variable "campaign_data_bucket_arn" {
  description = "campaign-data bucket ARN."
  type        = string
}

variable "sfmc_bucket" {
  description = "SFMC partner bucket name."
  type        = string
}

variable "sfmc_role_arn" {
  description = "SFMC cross-account role ARN."
  type        = string
}

variable "tmol_bucket" {
  description = "TMOL bucket name."
  type        = string
}

variable "tmol_role_arn" {
  description = "TMOL web-app role ARN."
  type        = string
}

variable "alarm_subscriptions" {
  description = "Subscriptions to the alarms SNS topic ({ protocol, endpoint })."
  type = list(object({
    protocol = string
    endpoint = string
  }))
  default = []
}

variable "flatcar_version" {
  description = "Flatcar release the instances boot (pinned; rolled by instance refresh)."
  type        = string
}

variable "predeploy_jobs" {
  description = "vf-export subcommands run from the image before the service starts on each new instance (indexes; add migrate for the cutover, docs/deploy.md)."
  type        = list(string)
  default     = ["indexes"]
}
