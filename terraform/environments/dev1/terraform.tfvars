# dev1 (nonprod account). Account ids, network ids and ARNs below are
# placeholders in the right shape (AWS documentation account 123456789012):
# replace them with the nonprod account's real values before the first apply.
# Scaling change (runbook): edit app_instance_min_count / app_instance_max_count
# here, then plan and apply.

aws_account_id = "123456789012"
environment    = "dev1"
account_tier   = "nonprod"
runtime_hours  = "24x7"

instance_type          = "t2.medium"
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
key_name               = "cet-qa-east"
acm_certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000001"
elb_access_logs_bucket = "tm-nonprod-elb-access-logs-us-east-1"

# The image in this environment's repository (vf-export-dev1), as scripts/image
# tags it; a deploy or a rollback changes only this line (docs/deploy.md).
vf_export_image_tag = "0.1.0-3f2051520402"
fluentd_image       = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fluentd-elasticsearch:v1.17"
falcon_sensor_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/falcon-sensor:7"
ecr_repository_arns = [
  "arn:aws:ecr:us-east-1:123456789012:repository/fluentd-elasticsearch",
  "arn:aws:ecr:us-east-1:123456789012:repository/falcon-sensor",
]
ssm_parameter_path = "/vf-export/dev1"
elasticsearch_host = "verifiedfan-logs.dev1.us-east-1.nonprod-tmaws.io"

exports_bucket_arn       = "arn:aws:s3:::vf-export-dev1-exports"
scoring_bucket_arn       = "arn:aws:s3:::vf-export-dev1-scoring"
vf_scoring_bucket_arn    = "arn:aws:s3:::vf-export-dev1-vf-scoring"
campaign_data_bucket_arn = "arn:aws:s3:::vf-export-dev1-campaign-data"
sfmc_bucket              = "sfmc-nonprod-vf-reminders"
sfmc_role_arn            = "arn:aws:iam::123456789012:role/sfmc-vf-export-nonprod"
tmol_bucket              = "tmol-nonprod-vf-codes"
tmol_role_arn            = "arn:aws:iam::123456789012:role/tmol-webapp-vf-export-nonprod"

# Who hears the operational alarms (module output alarm_sns_topic_arn is the
# topic), e.g. the on-call's PagerDuty integration:
#   { protocol = "https", endpoint = "<the PagerDuty CloudWatch integration URL>" }
alarm_subscriptions = []
