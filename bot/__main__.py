"""``python -m bot``: the same as the ``deploybot`` console script."""

from bot.cli import main

raise SystemExit(main())
