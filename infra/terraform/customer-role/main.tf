# The role an audit-log customer creates so the service can stream audit events to their
# CloudWatch Logs. The policy documents are shared templates, so the tests read exactly what
# Terraform applies.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

resource "aws_iam_role" "log_streaming" {
  name                 = var.role_name
  description          = "Lets the audit-log service write audit events to CloudWatch Logs."
  max_session_duration = 3600
  assume_role_policy = templatefile("${path.module}/trust-policy.json.tftpl", {
    partition              = data.aws_partition.current.partition
    service_aws_account_id = var.service_aws_account_id
    external_id            = var.external_id
  })
}

resource "aws_iam_role_policy" "log_streaming" {
  name = "audit-log-streaming"
  role = aws_iam_role.log_streaming.id
  policy = templatefile("${path.module}/policy.json.tftpl", {
    partition        = data.aws_partition.current.partition
    account_id       = data.aws_caller_identity.current.account_id
    log_group_prefix = var.log_group_prefix
  })
}
