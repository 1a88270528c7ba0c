"""The Telegram users of the tests."""

ADMIN = 4242
OPERATOR = 1001
OTHER_OPERATOR = 2002
STRANGER = 6666
