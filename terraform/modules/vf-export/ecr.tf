################################################################################
# ECR repository of the service image (one per environment: vf-export-<env>)
#
# Tags are immutable, so a tag names one image forever: units pull it only
# when it is absent, and a rollback is the previous tag (docs/deploy.md).
# Images are scanned on push; the lifecycle policy keeps the newest
# ecr_keep_images images (the deployed one and its predecessors).
################################################################################

resource "aws_ecr_repository" "this" {
  name                 = local.name
  image_tag_mutability = "IMMUTABLE"
  # Never delete images with the repository by accident.
  force_delete = false

  image_scanning_configuration {
    scan_on_push = true
  }

  # KMS: the AWS managed aws/ecr key unless ecr_kms_key_arn names one.
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.ecr_kms_key_arn
  }

  tags = local.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Untagged images (interrupted pushes) go after 7 days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 7
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the newest ${var.ecr_keep_images} images: the deployed one and the tags to roll back to"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = var.ecr_keep_images
        }
        action = { type = "expire" }
      },
    ]
  })
}
