#!/bin/bash
# OpenSSH in a systemd initramfs, as NixOS's boot.initrd.network.ssh has it: its own host
# key, the operator's key for root, started by initrd.target and killed at the switch to
# the real root. Its host key is /boot/ssh_host_ed25519_key of the system being built (where
# NixOS keeps it and the bot reads it); the keys it lets in for root are in
# /etc/deploybot-vm/initrd-authorized_keys.

check() {
    require_binaries /usr/sbin/sshd || return 1
    return 255 # only when asked for (--add deploybot-sshd)
}

depends() {
    echo systemd systemd-networkd systemd-ask-password
    return 0
}

install() {
    inst_binary /usr/sbin/sshd
    inst_multiple mkdir systemd-tty-ask-password-agent
    inst_simple "$moddir/sshd_config" /etc/ssh/sshd_config
    inst_simple /boot/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
    chmod 600 "$initdir/etc/ssh/ssh_host_ed25519_key"
    inst_simple /etc/deploybot-vm/initrd-authorized_keys /etc/ssh/authorized_keys.d/root
    inst_simple "$moddir/deploybot-sshd.service" "$systemdsystemunitdir/deploybot-sshd.service"
    inst_simple "$moddir/ip-dhcp.network" /etc/systemd/network/90-deploybot-dhcp.network
    # sshd drops privileges to its own user; root logs in with the shell dracut installs.
    grep '^sshd:' "$dracutsysrootdir/etc/passwd" >> "$initdir/etc/passwd"
    grep '^nogroup:' "$dracutsysrootdir/etc/group" >> "$initdir/etc/group"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target deploybot-sshd.service
}
