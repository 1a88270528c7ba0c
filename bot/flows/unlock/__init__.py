"""Unlocking a LUKS machine that waits in its initrd, from a phone.

The passphrase is only ever sent to an initrd that proves it holds the pinned initrd host
key: the bot logs in to it (pinned) before anyone is asked, so nobody types a passphrase the
bot cannot deliver, and the answer goes out over a connection that is already open.
Everyone allowed to unlock the machine is asked in their private chat; the first answer
wins, the others' prompts say who answered. The answer is deleted from the chat on arrival,
lives in a ``Secret`` for as long as the relay takes, and is wiped after it. The initrd's
verdict is judged as docs/unlocking.md and docs/initrd.md describe, and the unlock only
counts once the system's own SSH answers with its pinned key.

``unlocker`` keeps one session per machine, ``memory`` what outlives a session (cooldowns,
the flavour that worked, systemd tries per boot), and the unlocker chooses how a session
asks: ``askpass`` (one prompt, asked again when wrong) or ``systemd`` (per disk, tries per
boot). ``session`` is one conversation with one initrd and the steps both share;
``initrd_reboot`` the reboot offered when an initrd has given up.
"""

from bot.flows.unlock.texts import UnlockResult
from bot.flows.unlock.unlocker import Unlocker

__all__ = ["UnlockResult", "Unlocker"]
