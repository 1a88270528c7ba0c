"""The systemd flavour: an initramfs made by dracut with its systemd and crypt modules, so
systemd-cryptsetup asks for the passphrase, and OpenSSH added to it (tests/vm/dracut/), so
an SSH session answers with the real ``systemd-tty-ask-password-agent`` — as on NixOS's
systemd initrd (``boot.initrd.systemd.enable``).

Why OpenSSH and not dropbear: NixOS's initrd runs OpenSSH, and dracut installs a binary
with its libraries in one line, so sshd costs a small dracut module of our own
(``90deploybot-sshd``): sshd, its config, the image's initrd host key, the bot's key for
root, a unit wanted by ``initrd.target`` (after systemd-networkd) and the ``sshd``
privilege-separation user. Networking is dracut's ``systemd-networkd`` module with a
``.network`` file asking qemu's user-mode network for DHCP.

What the guest runs is Debian's, unchanged: systemd 252's systemd-cryptsetup (three tries
per boot), its password agent, dracut 059. The mapped volume is named ``root``
(``rd.luks.name``), on the whole disk (no partition name), so systemd-cryptsetup asks
``Please enter passphrase for disk root:``.

Its booted system is the same NixOS-shaped one as the scripted flavour's
(``tests/vm/nixos.py``): the bot reads a NixOS system on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.vm import nixos
from tests.vm.guest import Root

FILES = Path(__file__).parent / "dracut"
MODULE = "90deploybot-sshd"
AUTHORIZED = "/etc/deploybot-vm/initrd-authorized_keys"
DRACUT_CONF = """\
# The VM lab's systemd initramfs (tests/vm/flavour_systemd.py).
hostonly="no"
add_dracutmodules+=" systemd systemd-ask-password crypt systemd-networkd deploybot-sshd "
omit_dracutmodules+=" ifcfg plymouth network-legacy btrfs lvm mdraid dmraid multipath iscsi \
nfs nbd fcoe "
add_drivers+=" virtio_blk virtio_net virtio_pci dm_crypt "
compress="zstd"
"""


@dataclass(frozen=True)
class Systemd:
    name: str = "systemd"
    unlock: str = "systemd"
    packages: tuple[str, ...] = ("dracut", "dracut-network", "zstd")
    initramfs_command: str = (
        'set -e; kver=$(ls /lib/modules); dracut --force "/boot/initrd.img-$kver" "$kver"'
    )

    def recipe(self) -> str:
        files = sorted(p for p in FILES.rglob("*") if p.is_file())
        own = "".join(p.read_text() for p in files) + Path(__file__).read_text()
        return own + nixos.recipe()

    def prepare(self, root: Root) -> None:
        module = root.path / "usr/lib/dracut/modules.d" / MODULE
        module.mkdir(parents=True, exist_ok=True)
        for source in sorted((FILES / MODULE).iterdir()):
            mode = 0o755 if source.suffix == ".sh" else 0o644
            root.write(str(module.relative_to(root.path) / source.name), source.read_text(), mode)
        root.write(AUTHORIZED, root.bot_public + "\n", 0o600)
        root.write("/etc/dracut.conf.d/90-deploybot-vm.conf", DRACUT_CONF)
        nixos.install(root)

    def cmdline(self, luks_uuid: str) -> str:
        return f"rd.luks.name={luks_uuid}=root"


SYSTEMD = Systemd()
