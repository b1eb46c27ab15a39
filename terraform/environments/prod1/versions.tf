terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }

  # State in S3, locked through DynamoDB (runbook "Terraform State Locked").
  backend "s3" {
    bucket         = "tm-prod-terraform-state-us-east-1"
    key            = "vf-export/prod1/terraform.tfstate"
    region         = "us-east-1"
    dynamodb_table = "terraform-state-lock"
    encrypt        = true
  }
}
