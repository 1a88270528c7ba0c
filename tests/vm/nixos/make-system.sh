#!/bin/sh
# Makes a NixOS-shaped system at $out for the VM lab (tests/vm/nixos.py): the files the bot
# reads from a generation (kernel, initrd, kernel-modules, nixos-version, sw/bin) and a
# bin/switch-to-configuration that changes the running Debian guest through systemctl.
# $label names the configuration; $sshd is "on" (sshd running) or "off" (the configuration
# stops the real sshd, so no new login works: the rollback guard must act).
# Runs as a Nix derivation's builder on the bot's side and on the host for the image's
# first generation; uses only POSIX sh and coreutils.
set -eu
export PATH=/usr/bin:/bin  # a Nix builder starts with none
case "${sshd:-}" in on | off) ;; *) echo "make-system: sshd must be on or off" >&2; exit 1 ;; esac
mkdir -p "$out/bin" "$out/sw/bin"
# The booted kernel and initrd: the same for every configuration, so an update needs no
# reboot (Debian keeps these links at the root of the file system).
ln -s /vmlinuz "$out/kernel"
ln -s /initrd.img "$out/initrd"
ln -s /lib/modules "$out/kernel-modules"
printf '%s\n' "$label" >"$out/nixos-version"
for tool in sh nix nix-env nix-store systemctl; do
    ln -s "/usr/bin/$tool" "$out/sw/bin/$tool"
done
{
    echo '#!/bin/sh'
    echo "# switch-to-configuration of the VM lab's configuration \"$label\" (sshd $sshd)."
    echo 'set -eu'
    echo 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin'
    echo 'self=$(cd "$(dirname "$0")/.." && pwd -P)'
    echo 'case "${1:-}" in'
    echo '    switch | test) ;;'
    echo '    boot | dry-activate) exit 0 ;;'
    echo '    *) echo "usage: switch-to-configuration switch|boot|test|dry-activate" >&2; exit 1 ;;'
    echo 'esac'
    echo 'ln -sfn "$self" /run/.current-system.new'
    echo 'mv -T /run/.current-system.new /run/current-system'
    if [ "$sshd" = on ]; then
        echo 'echo "starting ssh.service"'
        echo 'systemctl start ssh.service'
    else
        echo 'echo "stopping ssh.service"'
        echo 'systemctl stop ssh.service'
    fi
} >"$out/bin/switch-to-configuration"
chmod 0555 "$out/bin/switch-to-configuration"
