"""The scripted flavour: Debian's initramfs-tools with cryptsetup-initramfs, dropbear as
its SSH server, and ``cryptsetup-askpass`` (tests/vm/scripted/) as NixOS's scripted
initrd has it.

Why dropbear: it is what Debian ships for SSH in the initramfs (``dropbear-initramfs``)
and it works as packaged. NixOS's initrd runs OpenSSH; putting OpenSSH into
initramfs-tools needs a hook of our own (sshd, its libraries, a privilege-separation
user, /run/sshd), which would be our own idea of an initrd again. The bot only needs an
SSH server that runs its command with a pinned host key, which dropbear is.

Its host key is the image's initrd key, converted from OpenSSH format with Debian's
``dropbearconvert``; the OpenSSH-format original stays at ``/boot/ssh_host_ed25519_key``
on the booted system, where the bot's ``initrd_host_key_file`` reads it (NixOS keeps it
there in that format).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.vm import nixos
from tests.vm.guest import GATEWAY, GUEST_ADDRESS, INITRD_KEY, INITRD_PORT, Root

FILES = Path(__file__).parent / "scripted"
DROPBEAR_KEY = "/etc/dropbear/initramfs/dropbear_ed25519_host_key"


@dataclass(frozen=True)
class Scripted:
    name: str = "scripted"
    unlock: str = "askpass"
    packages: tuple[str, ...] = ("cryptsetup-initramfs", "dropbear-initramfs", "initramfs-tools")
    initramfs_command: str = "update-initramfs -u -k all"

    def recipe(self) -> str:
        own = "".join(p.read_text() for p in sorted(FILES.iterdir())) + Path(__file__).read_text()
        return own + nixos.recipe()

    def prepare(self, root: Root) -> None:
        for old in (root.path / "etc/dropbear/initramfs").glob("dropbear_*_host_key"):
            old.unlink()
        root.chroot(
            ["/usr/lib/dropbear/dropbearconvert", "openssh", "dropbear", INITRD_KEY, DROPBEAR_KEY]
        )
        root.write(
            "/etc/dropbear/initramfs/dropbear.conf",
            f'DROPBEAR_OPTIONS="-p {INITRD_PORT} -s -j -k -r /etc/dropbear/'
            'dropbear_ed25519_host_key"\n',
        )
        # Only the modules this guest needs (the builder guest has the same virtual
        # hardware), and its network card, which the builder does not use: a small
        # initramfs builds and boots much faster under TCG.
        root.write("/etc/initramfs-tools/conf.d/deploybot-vm.conf", "MODULES=dep\n")
        root.write("/etc/initramfs-tools/modules", "virtio_pci\nvirtio_blk\nvirtio_net\ndm_crypt\n")
        root.write("/etc/dropbear/initramfs/authorized_keys", root.bot_public + "\n", 0o600)
        askpass = (FILES / "cryptsetup-askpass").read_text()
        root.write("/usr/local/share/deploybot-vm/cryptsetup-askpass", askpass, 0o755)
        root.write(
            "/etc/initramfs-tools/hooks/deploybot-askpass", (FILES / "hook").read_text(), 0o755
        )
        nixos.install(root)

    def cmdline(self, luks_uuid: str) -> str:
        return f"ip={GUEST_ADDRESS}::{GATEWAY}:255.255.255.0:vmguest:eth0:off"


SCRIPTED = Scripted()
