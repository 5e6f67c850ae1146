variable "service_aws_account_id" {
  description = "The \"AWS ID\" of the Audit Logs page (aws_account_id in GET /streaming)."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.service_aws_account_id))
    error_message = "The AWS ID is 12 digits."
  }
}

variable "external_id" {
  description = "The \"External ID\" of the Audit Logs page (external_id in GET /streaming)."
  type        = string
  sensitive   = true
}

variable "log_group_prefix" {
  description = "The service's log group prefix (its LOG_GROUP_PREFIX): what comes before /packer/ in Test connection's log_group."
  type        = string
  default     = "/hashicorp"
  validation {
    condition     = can(regex("^/[A-Za-z0-9_/.#-]*[A-Za-z0-9_.#-]$", var.log_group_prefix))
    error_message = "The prefix starts with / and does not end with one, as the stack's LogGroupPrefix parameter."
  }
}

variable "role_name" {
  type    = string
  default = "hcp-log-streaming"
}
