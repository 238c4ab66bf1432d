"""The queue seam: durable, at-least-once delivery of email events per priority class."""
