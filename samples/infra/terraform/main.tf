# A multi-region CloudTrail trail, its bucket, an SNS topic announcing each delivery, an
# SQS queue with a dead-letter queue subscribed to it, an optional DynamoDB checkpoint
# table, and the least-privilege IAM role for the trailproc worker.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  trail_name = "${var.name}-trail"
  trail_arn  = "arn:${data.aws_partition.current.partition}:cloudtrail:${data.aws_region.current.name}:${local.account_id}:trail/${local.trail_name}"
}

# --- bucket ------------------------------------------------------------------------------

resource "aws_s3_bucket" "trail" {
  bucket_prefix = "${var.name}-trail-"
  force_destroy = var.force_destroy_bucket
}

resource "aws_s3_bucket_public_access_block" "trail" {
  bucket                  = aws_s3_bucket.trail.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "CloudTrailAclCheck"
    actions   = ["s3:GetBucketAcl"]
    resources = [aws_s3_bucket.trail.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.trail_arn]
    }
  }
  statement {
    sid       = "CloudTrailWrite"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.trail.arn}/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "s3:x-amz-acl"
      values   = ["bucket-owner-full-control"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.trail_arn]
    }
  }
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.trail.arn, "${aws_s3_bucket.trail.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "trail" {
  bucket = aws_s3_bucket.trail.id
  policy = data.aws_iam_policy_document.bucket.json
}

# --- topic -------------------------------------------------------------------------------

resource "aws_sns_topic" "deliveries" {
  name = "${var.name}-deliveries"
}

data "aws_iam_policy_document" "topic" {
  statement {
    sid       = "CloudTrailPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.deliveries.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.trail_arn]
    }
  }
}

resource "aws_sns_topic_policy" "deliveries" {
  arn    = aws_sns_topic.deliveries.arn
  policy = data.aws_iam_policy_document.topic.json
}

# --- queues ------------------------------------------------------------------------------

resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.name}-deliveries-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "deliveries" {
  name                       = "${var.name}-deliveries"
  visibility_timeout_seconds = var.visibility_timeout
  message_retention_seconds  = 345600
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
}

data "aws_iam_policy_document" "queue" {
  statement {
    sid       = "TopicToQueue"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.deliveries.arn]
    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.deliveries.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "deliveries" {
  queue_url = aws_sqs_queue.deliveries.id
  policy    = data.aws_iam_policy_document.queue.json
}

resource "aws_sns_topic_subscription" "deliveries" {
  topic_arn            = aws_sns_topic.deliveries.arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.deliveries.arn
  raw_message_delivery = false
}

# --- trail -------------------------------------------------------------------------------

resource "aws_cloudtrail" "this" {
  name                          = local.trail_name
  s3_bucket_name                = aws_s3_bucket.trail.id
  sns_topic_name                = aws_sns_topic.deliveries.name
  is_multi_region_trail         = true
  include_global_service_events = true
  enable_log_file_validation    = true
  enable_logging                = true

  depends_on = [aws_s3_bucket_policy.trail, aws_sns_topic_policy.deliveries]
}

# --- checkpoints -------------------------------------------------------------------------

resource "aws_dynamodb_table" "checkpoints" {
  count        = var.create_checkpoint_table ? 1 : 0
  name         = "${var.name}-checkpoints"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }
}

# --- worker role -------------------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [var.worker_service_principal]
    }
  }
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid = "ConsumeNotifications"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.deliveries.arn]
  }
  statement {
    sid       = "ReadLogFiles"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.trail.arn}/AWSLogs/*"]
  }
  dynamic "statement" {
    for_each = aws_dynamodb_table.checkpoints
    content {
      # PutItem and DeleteItem: pending digest hashes, with verify_digests.
      sid = "Checkpoints"
      actions = [
        "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DescribeTable",
        "dynamodb:PutItem", "dynamodb:DeleteItem",
      ]
      resources = [statement.value.arn]
    }
  }
}

resource "aws_iam_role" "worker" {
  name_prefix        = "${var.name}-worker-"
  description        = "trailproc worker - consume the trail notifications and read its log files"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "trailproc-worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}
