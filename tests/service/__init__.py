"""The bot as it is run: the command line, ``deploybot check``, the service units, webhooks
and the Nix module."""
