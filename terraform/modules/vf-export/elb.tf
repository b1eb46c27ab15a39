################################################################################
# Internal classic ELB: HTTPS 443 (ACM) -> HTTP 8080
################################################################################

resource "aws_elb" "this" {
  #checkov:skip=CKV_AWS_376:TLS ends at this internal ELB (ACM cert on 443); the hop to the instances is HTTP 8080 inside the VPC as the ops spec requires, and the app security group admits 8080 only from the ELB and 10.0.0.0/8.
  name            = local.name
  internal        = true
  subnets         = var.subnet_ids
  security_groups = [aws_security_group.elb.id]

  cross_zone_load_balancing   = true
  idle_timeout                = 60
  connection_draining         = true
  connection_draining_timeout = 600

  listener {
    lb_port            = 443
    lb_protocol        = "https"
    instance_port      = 8080
    instance_protocol  = "http"
    ssl_certificate_id = var.acm_certificate_arn
  }

  health_check {
    target              = "HTTP:8080/heartbeat"
    interval            = 30
    timeout             = 3
    healthy_threshold   = 3
    unhealthy_threshold = 2
  }

  access_logs {
    bucket        = var.elb_access_logs_bucket
    bucket_prefix = local.name
    interval      = 60
    enabled       = true
  }

  tags = local.tags
}

# TLS 1.2+ only on the HTTPS listener.
resource "aws_load_balancer_policy" "tls" {
  load_balancer_name = aws_elb.this.name
  policy_name        = "${local.name}-tls-1-2"
  policy_type_name   = "SSLNegotiationPolicyType"

  policy_attribute {
    name  = "Reference-Security-Policy"
    value = "ELBSecurityPolicy-TLS-1-2-2017-01"
  }
}

resource "aws_load_balancer_listener_policy" "https" {
  load_balancer_name = aws_elb.this.name
  load_balancer_port = 443
  policy_names       = [aws_load_balancer_policy.tls.policy_name]
}
