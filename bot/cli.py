"""The command line: ``deploybot run | console | check`` (see the README)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config.inventory import Inventory, InventoryError, load_inventory
from bot.config.settings import Settings, SettingsError, load_settings
from bot.logs import setup_logging

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
EXAMPLE_INVENTORY = Path("machines.example.toml")

BOTFATHER_HELP = """\
deploybot run needs a Telegram bot token, and none is configured.

  1. In Telegram, talk to @BotFather: send /newbot and follow the questions.
  2. Put the token it gives you in deploy.env (see deploy.env.example):
         TELEGRAM_BOT_TOKEN=123456789:AA...
  3. Start the bot again, send it /whoami, and add your user id to DEPLOYBOT_ADMINS.

Without a token, `deploybot console` runs the same bot in this terminal."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploybot",
        description="Telegram chat-ops for NixOS machines on LUKS-encrypted disks.",
    )
    parser.add_argument(
        "--env", type=Path, metavar="FILE", help="settings file (default: ./deploy.env)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="the bot, long polling Telegram")
    run.add_argument(
        "--console-without-token",
        action="store_true",
        help="start the console instead when no token is configured (what `make run` does)",
    )
    commands.add_parser("console", help="the same bot in this terminal, no Telegram")
    commands.add_parser("check", help="validate settings, inventory, secrets and the SSH key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.env)
    except SettingsError as exc:
        print(f"deploybot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check":
        from bot.setup_check import run_check

        return asyncio.run(run_check(settings))
    if args.command == "run" and settings.token is None and not args.console_without_token:
        print(BOTFATHER_HELP, file=sys.stderr)
        return EXIT_USAGE
    console = args.command == "console" or settings.token is None
    inventory = _inventory_or_exit(settings, console)
    if inventory is None:
        return EXIT_PROBLEM
    if console:
        from bot.console.session import run_console

        return asyncio.run(run_console(settings, inventory, sys.stdin, sys.stdout))
    setup_logging(token=settings.token)
    from bot.polling import run_polling

    return run_polling(settings, inventory)


def _inventory_or_exit(settings: Settings, console: bool) -> Inventory | None:
    path = settings.inventory
    if console and not path.exists() and EXAMPLE_INVENTORY.exists():
        print(f"(no {path}: showing {EXAMPLE_INVENTORY})", file=sys.stderr)
        path = EXAMPLE_INVENTORY
    try:
        return load_inventory(path)
    except InventoryError as exc:
        print(f"deploybot: {exc}", file=sys.stderr)
        return None
