"""Names and limits of the notifications plugin."""

URL_PREFIX = "/api/notifications"
SEND_EMAIL_TASK = "notifications.send_email"

MAX_ADDRESS_LENGTH = 254
MAX_SUBJECT_LENGTH = 200
MAX_BODY_LENGTH = 100_000

#: SMTP reply codes 400-499 are temporary: the task retries them.
TEMPORARY_SMTP_CODES = range(400, 500)
