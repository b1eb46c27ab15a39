data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

# One exact Flatcar release per environment (flatcar_version): never the
# newest one, which would change what a replacement instance boots. A new
# release is a tfvars change, rolled out by instance refresh.
data "aws_ami" "flatcar" {
  count  = var.ami_id == null ? 1 : 0
  owners = [var.flatcar_ami_owner]

  filter {
    name   = "name"
    values = ["Flatcar-${var.flatcar_channel}-${var.flatcar_version}-hvm"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

locals {
  name = "vf-export-${var.environment}"

  # Required tags come last so var.tags cannot override them.
  tags = merge(var.tags, {
    ProductCode    = "PRD1541"
    Environment    = var.environment
    InventoryCode  = "vf-export"
    RuntimeHours   = var.runtime_hours
    Prometheus     = "enabled"
    Prometheus8080 = "enabled"
  })

  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.flatcar[0].id

  # The service image by immutable tag or digest in the module's repository.
  image_separator = startswith(var.vf_export_image_tag, "sha256:") ? "@" : ":"
  vf_export_image = "${aws_ecr_repository.this.repository_url}${local.image_separator}${var.vf_export_image_tag}"

  # The group's name is known before the group exists: the user data (in the
  # launch template the group needs) and the IAM policy name it.
  asg_name            = local.name
  lifecycle_hook_name = "${local.name}-terminating"
  asg_arn             = "arn:${data.aws_partition.current.partition}:autoscaling:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.asg_name}"

  exports_bucket    = element(split(":::", var.exports_bucket_arn), 1)
  scoring_bucket    = element(split(":::", var.scoring_bucket_arn), 1)
  vf_scoring_bucket = element(split(":::", var.vf_scoring_bucket_arn), 1)

  service_bucket_arns = [
    var.exports_bucket_arn,
    var.scoring_bucket_arn,
    var.vf_scoring_bucket_arn,
    var.campaign_data_bucket_arn,
  ]

  repo_root = "${path.module}/../../.."

  user_data = templatefile("${local.repo_root}/cloud-config/vf-export.yaml", {
    environment          = var.environment
    aws_region           = data.aws_region.current.name
    rust_log             = var.rust_log
    exports_bucket       = local.exports_bucket
    scoring_bucket       = local.scoring_bucket
    vf_scoring_bucket    = local.vf_scoring_bucket
    sfmc_bucket          = var.sfmc_bucket
    sfmc_role_arn        = var.sfmc_role_arn
    tmol_bucket          = var.tmol_bucket
    tmol_role_arn        = var.tmol_role_arn
    cloudwatch_namespace = var.cloudwatch_namespace
    asg_name             = local.asg_name
    asg_lifecycle_hook   = local.lifecycle_hook_name
    ssm_parameter_path   = var.ssm_parameter_path
    vf_export_image      = local.vf_export_image
    predeploy_jobs       = join(",", var.predeploy_jobs)
    aws_cli_image        = var.aws_cli_image
    fluentd_image        = var.fluentd_image
    node_exporter_image  = var.node_exporter_image
    falcon_sensor_image  = var.falcon_sensor_image
    falcon_environment   = title(var.account_tier)
    elasticsearch_host   = var.elasticsearch_host
    product_name         = var.product_name
    fluentd_conf         = file("${local.repo_root}/systemd/fluentd/fluent.conf")
    fluentd_unit         = file("${local.repo_root}/systemd/fluentd.service")
    node_exporter_unit   = file("${local.repo_root}/systemd/node-exporter.service")
    falcon_sensor_unit   = file("${local.repo_root}/systemd/falcon-sensor.service")
    campaigns_unit       = file("${local.repo_root}/systemd/campaigns.service")
    predeploy_unit       = file("${local.repo_root}/systemd/vf-export-predeploy.service")
    host_script          = file("${local.repo_root}/systemd/bin/vf-export-host")
  })
}

################################################################################
# Launch template
################################################################################

resource "aws_launch_template" "this" {
  name_prefix            = "${local.name}-"
  description            = "vf-export ${var.environment}: Flatcar + cloud-config"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  key_name               = var.key_name
  user_data              = base64encode(local.user_data)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.app.id]
  }

  # IMDSv2 only; hop limit 1 is enough because every container runs with
  # --network host. The service reads its target lifecycle state there
  # (ASG_LIFECYCLE_HOOK); tags let it find its group even without ASG_NAME.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  # Detailed (1-minute) monitoring: the CpuHigh alarm evaluates 60 s periods.
  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.ebs_kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = local.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = local.name })
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

################################################################################
# Auto Scaling Group
################################################################################

resource "aws_autoscaling_group" "this" {
  name                      = local.asg_name
  min_size                  = var.app_instance_min_count
  max_size                  = var.app_instance_max_count
  desired_capacity          = var.app_instance_min_count
  vpc_zone_identifier       = var.subnet_ids
  load_balancers            = [aws_elb.this.name]
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period
  default_cooldown          = 300
  metrics_granularity       = "1Minute"

  # Terraform waits until this many instances pass the ELB health check
  # when it creates the group or changes its size.
  wait_for_elb_capacity     = var.app_instance_min_count
  wait_for_capacity_timeout = "15m"

  # Scale-in removes instances of an older launch template first (left over
  # from a rollout), then the oldest. Either way the termination lifecycle
  # hook below lets the service hand its exports back first.
  termination_policies = ["OldestLaunchTemplate", "OldestInstance"]

  # Launch before terminate: replacements (health, rebalancing, refresh)
  # bring the new instance in service before the old one goes, even on a
  # one-instance group.
  instance_maintenance_policy {
    min_healthy_percentage = 100
    max_healthy_percentage = 200
  }

  # A new launch template version (image tag, AMI, user data) rolls the
  # instances: one new instance in service (ELB healthy, then warm-up) before
  # each old one is terminated; a refresh whose new instances never turn
  # healthy (a failing pre-deploy job, a broken image) rolls back by itself.
  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
      instance_warmup        = var.health_check_grace_period
      skip_matching          = true
      auto_rollback          = true
    }
  }

  enabled_metrics = [
    "GroupMinSize",
    "GroupMaxSize",
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupPendingInstances",
    "GroupStandbyInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
  ]

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  tag {
    key                 = "Name"
    value               = local.name
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = local.tags

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    precondition {
      condition     = var.app_instance_max_count >= var.app_instance_min_count
      error_message = "app_instance_max_count must be >= app_instance_min_count."
    }

    # Scaling policies and operators (set-desired-capacity) move the desired
    # count; terraform must not reset it on every apply.
    ignore_changes = [desired_capacity]
  }
}

################################################################################
# Termination lifecycle hook: scale-in and replacement never kill an export
#
# The ELB's connection draining protects HTTP requests only; exports run in
# the background. The group holds a terminating instance in
# Terminating:Wait; the service (ASG_LIFECYCLE_HOOK in /etc/vf-export.env)
# sees it in instance metadata, hands its running exports back to the queue
# and completes the action with CONTINUE. The heartbeat timeout only bounds
# the wait when the service cannot answer (then CONTINUE all the same): it
# stays above the service's drain timeout (DRAIN_TIMEOUT_SECS=540) plus a
# margin, which tests/suite/infra_terraform.rs holds.
################################################################################

resource "aws_autoscaling_lifecycle_hook" "terminating" {
  name                   = local.lifecycle_hook_name
  autoscaling_group_name = aws_autoscaling_group.this.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = var.lifecycle_hook_heartbeat_timeout
  default_result         = "CONTINUE"
}
