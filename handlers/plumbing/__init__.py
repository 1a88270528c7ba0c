"""What every command family stands on: the door and the gate in front of them, the chat
port implemented with python-telegram-bot, the order updates are handled in, buttons,
pages, free-text answers and the Bot API transport."""
