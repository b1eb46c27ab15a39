# prod1 (prod account). Account ids, network ids and ARNs below are
# placeholders in the right shape (example account 210987654321):
# replace them with the prod account's real values before the first apply.
# Scaling change (runbook): edit app_instance_min_count / app_instance_max_count
# here, then plan and apply.

aws_account_id = "210987654321"
environment    = "prod1"
account_tier   = "prod"
runtime_hours  = "24x7"

instance_type          = "t2.xlarge"
app_instance_min_count = 1
app_instance_max_count = 1
enable_backlog_scaling = false

vpc_id                  = "vpc-0a1b2c3d4e5f60001"
subnet_ids              = ["subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002"]
ssh_ingress_cidr_blocks = ["10.0.0.0/8"]
mongodb_cidr_blocks     = ["10.10.0.0/16"]

# flatcar_version: the pinned Flatcar release (instances never update
# themselves); a new release is a change here, rolled out by instance refresh
# (docs/deploy.md).
flatcar_ami_owner      = "075585003325"
flatcar_version        = "4081.2.0"
key_name               = "cet-prod-east"
acm_certificate_arn    = "arn:aws:acm:us-east-1:210987654321:certificate/00000000-0000-0000-0000-000000000001"
elb_access_logs_bucket = "tm-prod-elb-access-logs-us-east-1"

# The image in this environment's repository (vf-export-prod1), as scripts/image
# tags it; a deploy or a rollback changes only this line (docs/deploy.md).
vf_export_image_tag = "0.1.0-3f2051520402"
fluentd_image       = "210987654321.dkr.ecr.us-east-1.amazonaws.com/fluentd-elasticsearch:v1.17"
falcon_sensor_image = "210987654321.dkr.ecr.us-east-1.amazonaws.com/falcon-sensor:7"
ecr_repository_arns = [
  "arn:aws:ecr:us-east-1:210987654321:repository/fluentd-elasticsearch",
  "arn:aws:ecr:us-east-1:210987654321:repository/falcon-sensor",
]
ssm_parameter_path = "/vf-export/prod1"
elasticsearch_host = "verifiedfan-logs.prod1.us-east-1.prod-tmaws.io"

exports_bucket_arn       = "arn:aws:s3:::vf-export-prod1-exports"
scoring_bucket_arn       = "arn:aws:s3:::vf-export-prod1-scoring"
vf_scoring_bucket_arn    = "arn:aws:s3:::vf-export-prod1-vf-scoring"
campaign_data_bucket_arn = "arn:aws:s3:::vf-export-prod1-campaign-data"
sfmc_bucket              = "sfmc-prod-vf-reminders"
sfmc_role_arn            = "arn:aws:iam::210987654321:role/sfmc-vf-export-prod"
tmol_bucket              = "tmol-prod-vf-codes"
tmol_role_arn            = "arn:aws:iam::210987654321:role/tmol-webapp-vf-export-prod"

# Who hears the operational alarms (module output alarm_sns_topic_arn is the
# topic), e.g. the on-call's PagerDuty integration:
#   { protocol = "https", endpoint = "<the PagerDuty CloudWatch integration URL>" }
alarm_subscriptions = []
