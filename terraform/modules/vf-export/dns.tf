################################################################################
# DNS: vf-export-<env>-<region>.titan.<nonprod|prod>-tmaws.io -> ELB
################################################################################

locals {
  dns_zone_name   = "titan.${var.account_tier}-tmaws.io"
  dns_record_name = "vf-export-${var.environment}-${data.aws_region.current.name}.${local.dns_zone_name}"
}

data "aws_route53_zone" "this" {
  name         = local.dns_zone_name
  private_zone = var.route53_private_zone
}

resource "aws_route53_record" "this" {
  zone_id = data.aws_route53_zone.this.zone_id
  name    = local.dns_record_name
  type    = "A"

  alias {
    name                   = aws_elb.this.dns_name
    zone_id                = aws_elb.this.zone_id
    evaluate_target_health = true
  }
}
