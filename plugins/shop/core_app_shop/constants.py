"""Names and limits shared by the shop's views and tasks."""

URL_PREFIX = "/api/shop"

#: Tasks are named '<plugin>.<task>'; other plugins' tasks are reached by name only.
DAILY_SUMMARY_TASK = "shop.daily_sales_summary"
SEND_EMAIL_TASK = "notifications.send_email"

MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254
MAX_ITEM_LENGTH = 200
MAX_QUANTITY = 1000
MAX_PRICE_CENTS = 100_000_000
