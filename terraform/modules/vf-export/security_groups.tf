################################################################################
# Security groups. No ingress from 0.0.0.0/0 or ::/0 anywhere: every ingress
# source is an internal CIDR variable (validated) or the ELB security group.
################################################################################

resource "aws_security_group" "elb" {
  name_prefix = "${local.name}-elb-"
  description = "vf-export ${var.environment} internal ELB"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.name}-elb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "app" {
  name_prefix = "${local.name}-app-"
  description = "vf-export ${var.environment} instances"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.name}-app" })

  lifecycle {
    create_before_destroy = true
  }
}

# ELB ------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "elb_https" {
  for_each = toset(var.elb_ingress_cidr_blocks)

  security_group_id = aws_security_group.elb.id
  description       = "HTTPS from internal callers"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "elb_to_app" {
  security_group_id            = aws_security_group.elb.id
  description                  = "Listener and health checks to the instances"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.app.id
  tags                         = local.tags
}

# Instances ------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "app_from_elb" {
  security_group_id            = aws_security_group.app.id
  description                  = "Service port from the ELB"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.elb.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "app_internal" {
  for_each = toset(var.app_ingress_cidr_blocks)

  security_group_id = aws_security_group.app.id
  description       = "Service port (/metrics, /heartbeat) from the internal network"
  ip_protocol       = "tcp"
  from_port         = 8080
  to_port           = 8080
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "app_ssh" {
  for_each = toset(var.ssh_ingress_cidr_blocks)

  security_group_id = aws_security_group.app.id
  description       = "SSH (user core) from the internal bastion/VPN range"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
  tags              = local.tags
}

# Egress 443 to anywhere: the instances call AWS APIs (S3, STS, SSM, ECR,
# CloudWatch), pull images (ECR, public.ecr.aws, quay.io) and ship logs to
# Elasticsearch, all over HTTPS, through the VPC's NAT; the endpoints have no
# fixed CIDRs. Only TCP 443 is open. DNS and NTP go to the VPC resolver and
# the Amazon time service, which security groups do not filter.
resource "aws_vpc_security_group_egress_rule" "app_https" {
  security_group_id = aws_security_group.app.id
  description       = "HTTPS to AWS APIs, image registries and Elasticsearch"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "app_mongodb" {
  for_each = toset(var.mongodb_cidr_blocks)

  security_group_id = aws_security_group.app.id
  description       = "MongoDB"
  ip_protocol       = "tcp"
  from_port         = 27017
  to_port           = 27017
  cidr_ipv4         = each.value
  tags              = local.tags
}
