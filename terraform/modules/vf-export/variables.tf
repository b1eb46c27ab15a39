################################################################################
# Identity
################################################################################

variable "environment" {
  description = "Environment name, e.g. dev1 or prod1. Used in resource names, the DNS record and the Environment tag."
  type        = string

  validation {
    condition     = can(regex("^(dev|qa|preprod|prod)[0-9]+$", var.environment))
    error_message = "The environment must look like dev1, qa1, preprod1 or prod1."
  }
}

variable "account_tier" {
  description = "Which account family the environment lives in: nonprod or prod. Selects the DNS zone titan.<tier>-tmaws.io and the falcon Environment tag."
  type        = string

  validation {
    condition     = contains(["nonprod", "prod"], var.account_tier)
    error_message = "The account_tier must be nonprod or prod."
  }
}

variable "runtime_hours" {
  description = "Value of the RuntimeHours tag (the scheduler's runtime window for the instances)."
  type        = string
  default     = "24x7"

  validation {
    condition     = length(var.runtime_hours) > 0
    error_message = "The runtime_hours tag must not be empty."
  }
}

variable "tags" {
  description = "Additional tags for every resource. The required tags (ProductCode, Environment, InventoryCode, RuntimeHours, Prometheus, Prometheus8080) cannot be overridden."
  type        = map(string)
  default     = {}
}

################################################################################
# Network
################################################################################

variable "vpc_id" {
  description = "ID of the VPC the ELB and the instances run in."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "The vpc_id must be a VPC id (vpc-...)."
  }
}

variable "subnet_ids" {
  description = "Private subnet ids (at least two availability zones) for the internal ELB and the Auto Scaling Group."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "Give at least two subnet ids (subnet-...)."
  }
}

variable "app_ingress_cidr_blocks" {
  description = "Internal CIDR blocks allowed to reach the service port 8080 directly (the ELB security group is always allowed)."
  type        = list(string)
  default     = ["10.0.0.0/8"]

  validation {
    condition     = alltrue([for c in var.app_ingress_cidr_blocks : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Each entry must be an IPv4 CIDR block and none may be 0.0.0.0/0."
  }
}

variable "elb_ingress_cidr_blocks" {
  description = "Internal CIDR blocks (VPN, campaign tools, internal callers) allowed to reach the ELB on 443."
  type        = list(string)
  default     = ["10.0.0.0/8"]

  validation {
    condition     = alltrue([for c in var.elb_ingress_cidr_blocks : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Each entry must be an IPv4 CIDR block and none may be 0.0.0.0/0."
  }
}

variable "ssh_ingress_cidr_blocks" {
  description = "Internal CIDR blocks (bastion/VPN) allowed to SSH to the instances on 22."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.ssh_ingress_cidr_blocks : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Each entry must be an IPv4 CIDR block and none may be 0.0.0.0/0."
  }
}

variable "mongodb_cidr_blocks" {
  description = "CIDR blocks of the MongoDB cluster (egress on 27017)."
  type        = list(string)

  validation {
    condition     = length(var.mongodb_cidr_blocks) > 0 && alltrue([for c in var.mongodb_cidr_blocks : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "Give at least one IPv4 CIDR block; 0.0.0.0/0 is not allowed."
  }
}

################################################################################
# Instances
################################################################################

variable "instance_type" {
  description = "EC2 instance type (dev1: t2.medium, prod1: t2.xlarge)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "The instance_type must be an EC2 instance type such as t2.medium."
  }
}

variable "flatcar_ami_owner" {
  description = "Account id (or alias) that publishes the Flatcar AMIs; the AMI is looked up by owner and name."
  type        = string

  validation {
    condition     = can(regex("^([0-9]{12}|aws-marketplace)$", var.flatcar_ami_owner))
    error_message = "The flatcar_ami_owner must be a 12-digit account id or aws-marketplace."
  }
}

variable "flatcar_channel" {
  description = "Flatcar release channel of flatcar_version (AMI name Flatcar-<channel>-<version>-hvm)."
  type        = string
  default     = "stable"

  validation {
    condition     = contains(["stable", "beta", "alpha", "lts"], var.flatcar_channel)
    error_message = "The flatcar_channel must be stable, beta, alpha or lts."
  }
}

variable "ami_id" {
  description = "An AMI id to boot instead of the Flatcar release flatcar_version (a copied or private AMI); null: look flatcar_version up by owner and name."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]+$", var.ami_id))
    error_message = "The ami_id must be null or an AMI id (ami-...)."
  }
}

variable "key_name" {
  description = "EC2 key pair for SSH as user core (cet-qa-east in nonprod, cet-prod-east in prod); null for none."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Size of the encrypted gp3 root volume in GiB."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size >= 10 && var.root_volume_size <= 1024
    error_message = "The root_volume_size must be between 10 and 1024 GiB."
  }
}

variable "ebs_kms_key_arn" {
  description = "KMS key for the root volume; null uses the account's default EBS key."
  type        = string
  default     = null

  validation {
    condition     = var.ebs_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.ebs_kms_key_arn))
    error_message = "The ebs_kms_key_arn must be null or a KMS key ARN."
  }
}

################################################################################
# Auto Scaling
################################################################################

variable "app_instance_min_count" {
  description = "Minimum (and initial desired) number of instances in the Auto Scaling Group."
  type        = number
  default     = 1

  validation {
    condition     = var.app_instance_min_count >= 0 && floor(var.app_instance_min_count) == var.app_instance_min_count
    error_message = "The app_instance_min_count must be a whole number >= 0."
  }
}

variable "app_instance_max_count" {
  description = "Maximum number of instances in the Auto Scaling Group (must be >= app_instance_min_count)."
  type        = number
  default     = 1

  validation {
    condition     = var.app_instance_max_count >= 1 && floor(var.app_instance_max_count) == var.app_instance_max_count
    error_message = "The app_instance_max_count must be a whole number >= 1."
  }
}

variable "health_check_grace_period" {
  description = "Seconds after launch before the ASG acts on ELB health checks (image pulls and start-up)."
  type        = number
  default     = 300

  validation {
    condition     = var.health_check_grace_period >= 0
    error_message = "The health_check_grace_period must be >= 0."
  }
}

variable "cpu_high_threshold" {
  description = "CpuHigh alarm: average CPUUtilization (%) above which the ASG scales out."
  type        = number
  default     = 30

  validation {
    condition     = var.cpu_high_threshold > 0 && var.cpu_high_threshold <= 100
    error_message = "The cpu_high_threshold must be in (0, 100]."
  }
}

variable "cpu_high_period" {
  description = "CpuHigh alarm: period in seconds (60 needs the detailed monitoring the launch template enables)."
  type        = number
  default     = 60

  validation {
    condition     = contains([10, 30], var.cpu_high_period) || (var.cpu_high_period >= 60 && var.cpu_high_period % 60 == 0)
    error_message = "The cpu_high_period must be 10, 30 or a multiple of 60."
  }
}

variable "cpu_high_evaluation_periods" {
  description = "CpuHigh alarm: number of consecutive periods above the threshold."
  type        = number
  default     = 3

  validation {
    condition     = var.cpu_high_evaluation_periods >= 1
    error_message = "The cpu_high_evaluation_periods must be >= 1."
  }
}

variable "cpu_low_threshold" {
  description = "CpuLow alarm: average CPUUtilization (%) below which the ASG scales in."
  type        = number
  default     = 15

  validation {
    condition     = var.cpu_low_threshold >= 0 && var.cpu_low_threshold < 100
    error_message = "The cpu_low_threshold must be in [0, 100)."
  }
}

variable "cpu_low_period" {
  description = "CpuLow alarm: period in seconds."
  type        = number
  default     = 300

  validation {
    condition     = var.cpu_low_period >= 60 && var.cpu_low_period % 60 == 0
    error_message = "The cpu_low_period must be a multiple of 60."
  }
}

variable "cpu_low_evaluation_periods" {
  description = "CpuLow alarm: number of consecutive periods below the threshold."
  type        = number
  default     = 3

  validation {
    condition     = var.cpu_low_evaluation_periods >= 1
    error_message = "The cpu_low_evaluation_periods must be >= 1."
  }
}

variable "scale_up_adjustment" {
  description = "Instances added by the CpuHigh simple scaling policy."
  type        = number
  default     = 4

  validation {
    condition     = var.scale_up_adjustment >= 1
    error_message = "The scale_up_adjustment must be >= 1."
  }
}

variable "scale_down_adjustment" {
  description = "Instances removed (negative number) by the CpuLow simple scaling policy."
  type        = number
  default     = -1

  validation {
    condition     = var.scale_down_adjustment <= -1
    error_message = "The scale_down_adjustment must be <= -1."
  }
}

variable "enable_backlog_scaling" {
  description = "Add a step scaling policy that scales out on the service's ExportBacklog CloudWatch metric (needs CLOUDWATCH_NAMESPACE, which this module always sets)."
  type        = bool
  default     = false
}

variable "backlog_scale_out_threshold" {
  description = "ExportBacklog (PENDING exports, Maximum over 60 s) above which the backlog policy adds instances."
  type        = number
  default     = 10

  validation {
    condition     = var.backlog_scale_out_threshold >= 0
    error_message = "The backlog_scale_out_threshold must be >= 0."
  }
}

################################################################################
# Load balancer and DNS
################################################################################

variable "acm_certificate_arn" {
  description = "ARN of the ACM certificate for the HTTPS 443 listener (covering the vf-export-<env>-<region>.titan.<tier>-tmaws.io name)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.acm_certificate_arn))
    error_message = "The acm_certificate_arn must be an ACM certificate ARN."
  }
}

variable "elb_access_logs_bucket" {
  description = "Existing S3 bucket (with the ELB log-delivery bucket policy) that receives the ELB access logs."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.elb_access_logs_bucket))
    error_message = "The elb_access_logs_bucket must be an S3 bucket name."
  }
}

variable "route53_private_zone" {
  description = "Whether the titan.<tier>-tmaws.io zone holding the record is a private hosted zone."
  type        = bool
  default     = false
}

################################################################################
# Service configuration (written to /etc/vf-export.env)
################################################################################

variable "vf_export_image_tag" {
  description = "The service image to run from the module's ECR repository (vf-export-<environment>): an immutable tag as scripts/image names it (<version>-<commit>, e.g. 0.1.0-3f20515a1b2c) or a digest (sha256:...). A rollback is the previous tag (docs/deploy.md)."
  type        = string

  validation {
    condition     = can(regex("^(sha256:[0-9a-f]{64}|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$", var.vf_export_image_tag)) && var.vf_export_image_tag != "latest" && !can(regex("-(dirty|debug)$", var.vf_export_image_tag))
    error_message = "The vf_export_image_tag must be an image tag (not latest, not a -dirty or -debug build of scripts/image) or a sha256: digest."
  }
}

variable "fluentd_image" {
  description = "fluentd image with fluent-plugin-elasticsearch and fluent-plugin-concat (in the same ECR registry as the service image)."
  type        = string
}

variable "falcon_sensor_image" {
  description = "CrowdStrike Falcon sensor container image (mirrored into the same ECR registry as the service image)."
  type        = string
}

variable "node_exporter_image" {
  description = "Prometheus node exporter image."
  type        = string
  default     = "quay.io/prometheus/node-exporter:v1.8.2"
}

variable "aws_cli_image" {
  description = "AWS CLI image used on the host (Flatcar has no aws CLI) to read SSM parameters and log in to ECR."
  type        = string
  default     = "public.ecr.aws/aws-cli/aws-cli:2.17.0"
}

variable "ecr_repository_arns" {
  description = "ECR repositories of the host images the instances pull besides the service's own (fluentd, falcon); the module's repository is always allowed."
  type        = list(string)

  validation {
    condition     = length(var.ecr_repository_arns) > 0 && alltrue([for a in var.ecr_repository_arns : can(regex("^arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/.+$", a))])
    error_message = "Each entry must be an ECR repository ARN (no wildcards for the account)."
  }
}

variable "rust_log" {
  description = "RUST_LOG filter of the service."
  type        = string
  default     = "info"
}

variable "cloudwatch_namespace" {
  description = "CloudWatch namespace the service publishes ExportBacklog / ExportsInFlight to; PutMetricData is allowed for this namespace only."
  type        = string
  default     = "VfExport"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/#:-]+$", var.cloudwatch_namespace)) && !startswith(var.cloudwatch_namespace, "AWS/")
    error_message = "The cloudwatch_namespace must be a custom namespace (not AWS/...)."
  }
}

variable "ssm_parameter_path" {
  description = "SSM Parameter Store path of the service's secrets, e.g. /vf-export/dev1 (SecureStrings <path>/env with KEY=value lines, <path>/falcon-cid)."
  type        = string

  validation {
    condition     = can(regex("^/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.ssm_parameter_path))
    error_message = "The ssm_parameter_path must start with / and have no trailing /."
  }
}

variable "ssm_kms_key_arn" {
  description = "Customer managed KMS key encrypting the SecureStrings; null when they use the AWS managed aws/ssm key."
  type        = string
  default     = null

  validation {
    condition     = var.ssm_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.ssm_kms_key_arn))
    error_message = "The ssm_kms_key_arn must be null or a KMS key ARN."
  }
}

variable "elasticsearch_host" {
  description = "Elasticsearch endpoint fluentd ships to (HTTPS 443), e.g. verifiedfan-logs.dev1.us-east-1.nonprod-tmaws.io."
  type        = string
}

variable "product_name" {
  description = "Value of the product_name field fluentd adds to every log record (Kibana searches use it)."
  type        = string
  default     = "titan"
}

################################################################################
# Buckets and cross-account roles
################################################################################

variable "exports_bucket_arn" {
  description = "ARN of the exports bucket (EXPORTS_BUCKET)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", var.exports_bucket_arn))
    error_message = "Must be an S3 bucket ARN."
  }
}

variable "scoring_bucket_arn" {
  description = "ARN of the scoring bucket (SCORING_BUCKET)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", var.scoring_bucket_arn))
    error_message = "Must be an S3 bucket ARN."
  }
}

variable "vf_scoring_bucket_arn" {
  description = "ARN of the vf-scoring bucket (VF_SCORING_BUCKET)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", var.vf_scoring_bucket_arn))
    error_message = "Must be an S3 bucket ARN."
  }
}

variable "campaign_data_bucket_arn" {
  description = "ARN of the campaign-data bucket."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", var.campaign_data_bucket_arn))
    error_message = "Must be an S3 bucket ARN."
  }
}

variable "sfmc_bucket" {
  description = "Name of the SFMC partner bucket (SFMC_BUCKET), written through the SFMC role."
  type        = string
}

variable "sfmc_role_arn" {
  description = "Cross-account SFMC role the instances may assume (SFMC_ROLE_ARN)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", var.sfmc_role_arn))
    error_message = "Must be a single IAM role ARN (no wildcards)."
  }
}

variable "tmol_bucket" {
  description = "Name of the TMOL bucket (TMOL_BUCKET), written through the TMOL role."
  type        = string
}

variable "tmol_role_arn" {
  description = "TMOL web-app role the instances may assume (TMOL_ROLE_ARN)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", var.tmol_role_arn))
    error_message = "Must be a single IAM role ARN (no wildcards)."
  }
}

################################################################################
# Alarms
################################################################################

variable "elb_5xx_threshold" {
  description = "5XX responses per 5 minutes (HTTPCode_Backend_5XX from the instances, HTTPCode_ELB_5XX from the ELB itself) above which each 5XX alarm fires."
  type        = number
  default     = 10

  validation {
    condition     = var.elb_5xx_threshold >= 0
    error_message = "The elb_5xx_threshold must be >= 0."
  }
}

################################################################################
# Rollouts: pinned AMI, image repository, lifecycle hook, pre-deploy jobs
################################################################################

variable "flatcar_version" {
  description = "Flatcar release the instances boot, pinned per environment (e.g. 4081.2.0; AMI name Flatcar-<channel>-<version>-hvm). Instances never update themselves: a new release is a change here, rolled out by instance refresh."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.flatcar_version))
    error_message = "The flatcar_version must be an exact Flatcar release such as 4081.2.0 (no wildcards)."
  }
}

variable "ecr_kms_key_arn" {
  description = "KMS key encrypting the ECR repository; null uses the AWS managed aws/ecr key."
  type        = string
  default     = null

  validation {
    condition     = var.ecr_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.ecr_kms_key_arn))
    error_message = "The ecr_kms_key_arn must be null or a KMS key ARN."
  }
}

variable "ecr_keep_images" {
  description = "Images the ECR lifecycle policy keeps (newest first): the deployed one and the tags a rollback may need. Push only deploy candidates."
  type        = number
  default     = 30

  validation {
    condition     = var.ecr_keep_images >= 10 && floor(var.ecr_keep_images) == var.ecr_keep_images
    error_message = "The ecr_keep_images must be a whole number >= 10."
  }
}

variable "lifecycle_hook_heartbeat_timeout" {
  description = "Seconds a terminating instance may wait for the service to hand its exports back and complete the lifecycle action; only reached when the service cannot answer (then the termination continues). Keep it above DRAIN_TIMEOUT_SECS (540) plus a margin."
  type        = number
  default     = 660

  validation {
    condition     = var.lifecycle_hook_heartbeat_timeout >= 600 && var.lifecycle_hook_heartbeat_timeout <= 7200
    error_message = "The lifecycle_hook_heartbeat_timeout must be between 600 (above the 540 s drain timeout plus a margin) and 7200 seconds."
  }
}

variable "predeploy_jobs" {
  description = "vf-export subcommands vf-export-predeploy.service runs from the service image, in order, before the service starts on each new instance: indexes always; add migrate for the cutover from the original service (docs/deploy.md)."
  type        = list(string)
  default     = ["indexes"]

  validation {
    condition     = length(var.predeploy_jobs) > 0 && alltrue([for j in var.predeploy_jobs : contains(["indexes", "migrate"], j)])
    error_message = "The predeploy_jobs must be a non-empty list of indexes and migrate."
  }
}

variable "alarm_subscriptions" {
  description = "Who hears the operational alarms: subscriptions to the module's alarms SNS topic, e.g. { protocol = \"https\", endpoint = \"<PagerDuty CloudWatch integration URL>\" } or { protocol = \"email\", endpoint = \"oncall@example.com\" } (email waits for the recipient to confirm)."
  type = list(object({
    protocol = string
    endpoint = string
  }))
  default = []

  validation {
    condition     = alltrue([for s in var.alarm_subscriptions : contains(["email", "email-json", "https", "sms", "sqs", "lambda", "firehose", "application"], s.protocol) && length(s.endpoint) > 0])
    error_message = "Each subscription needs an SNS protocol (email, email-json, https, sms, sqs, lambda, firehose, application) and an endpoint; plain http is not allowed."
  }
}

variable "backlog_age_alarm_threshold" {
  description = "ExportBacklogAge alarm: seconds the oldest PENDING export may wait (Maximum over 60 s, 5 periods in a row) before the alarm notifies."
  type        = number
  default     = 1800

  validation {
    condition     = var.backlog_age_alarm_threshold >= 60
    error_message = "The backlog_age_alarm_threshold must be at least 60 seconds."
  }
}
