variable "name" {
  description = "Prefix for every resource name (trail, topic, queues, role, table)."
  type        = string
  default     = "trailproc"
}

variable "visibility_timeout" {
  description = "Queue visibility timeout in seconds (trailproc extends it while working)."
  type        = number
  default     = 60
}

variable "max_receive_count" {
  description = "Receives before SQS moves a failing message to the dead-letter queue."
  type        = number
  default     = 5
}

variable "worker_service_principal" {
  description = "Service that runs the worker and assumes its role."
  type        = string
  default     = "ecs-tasks.amazonaws.com"
}

variable "create_checkpoint_table" {
  description = "Create a DynamoDB table for checkpoints shared by several workers."
  type        = bool
  default     = true
}

variable "force_destroy_bucket" {
  description = "Allow terraform destroy to delete a bucket that still holds logs."
  type        = bool
  default     = false
}
