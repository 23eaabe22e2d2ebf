output "queue_url" {
  description = "trailproc queue_url"
  value       = aws_sqs_queue.deliveries.id
}

output "dead_letter_queue_url" {
  description = "Where messages go after max_receive_count failed receives"
  value       = aws_sqs_queue.dead_letter.id
}

output "bucket_name" {
  description = "The trail's bucket (trailproc allowed_buckets)"
  value       = aws_s3_bucket.trail.id
}

output "topic_arn" {
  description = "The trail's notification topic (trailproc allowed_topic_arns)"
  value       = aws_sns_topic.deliveries.arn
}

output "worker_role_arn" {
  description = "Role for the trailproc worker"
  value       = aws_iam_role.worker.arn
}

output "checkpoint" {
  description = "trailproc checkpoint setting"
  value       = var.create_checkpoint_table ? "dynamodb://${aws_dynamodb_table.checkpoints[0].name}" : "sqlite"
}
