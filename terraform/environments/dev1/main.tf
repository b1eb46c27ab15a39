module "vf_export" {
  source = "../../modules/vf-export"

  environment            = var.environment
  account_tier           = var.account_tier
  runtime_hours          = var.runtime_hours
  instance_type          = var.instance_type
  app_instance_min_count = var.app_instance_min_count
  app_instance_max_count = var.app_instance_max_count
  enable_backlog_scaling = var.enable_backlog_scaling

  vpc_id                  = var.vpc_id
  subnet_ids              = var.subnet_ids
  ssh_ingress_cidr_blocks = var.ssh_ingress_cidr_blocks
  mongodb_cidr_blocks     = var.mongodb_cidr_blocks

  flatcar_ami_owner      = var.flatcar_ami_owner
  flatcar_version        = var.flatcar_version
  key_name               = var.key_name
  acm_certificate_arn    = var.acm_certificate_arn
  elb_access_logs_bucket = var.elb_access_logs_bucket

  vf_export_image_tag = var.vf_export_image_tag
  predeploy_jobs      = var.predeploy_jobs
  fluentd_image       = var.fluentd_image
  falcon_sensor_image = var.falcon_sensor_image
  ecr_repository_arns = var.ecr_repository_arns
  ssm_parameter_path  = var.ssm_parameter_path
  elasticsearch_host  = var.elasticsearch_host

  exports_bucket_arn       = var.exports_bucket_arn
  scoring_bucket_arn       = var.scoring_bucket_arn
  vf_scoring_bucket_arn    = var.vf_scoring_bucket_arn
  campaign_data_bucket_arn = var.campaign_data_bucket_arn
  sfmc_bucket              = var.sfmc_bucket
  sfmc_role_arn            = var.sfmc_role_arn
  tmol_bucket              = var.tmol_bucket
  tmol_role_arn            = var.tmol_role_arn

  alarm_subscriptions = var.alarm_subscriptions
}
