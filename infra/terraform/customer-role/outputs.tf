output "role_arn" {
  description = "The role_arn of the CloudWatch destination."
  value       = aws_iam_role.log_streaming.arn
}
