#!/bin/sh
# PID 1 of the VM lab's builder guest (tests/vm/guest.py): format the target disk (vda) as
# LUKS2 with the real cryptsetup and this kernel's dm-crypt, copy this system (the seed,
# vdb) onto it, and make the initramfs there with the flavour's command, against the open
# volume. The last line on the console says whether it worked; then the guest powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs run /run
. /etc/deploybot-build.env
rm -f /etc/deploybot-build.env
# The builder boots the stock initramfs, whose dropbear script (made before busybox was
# installed) keeps looping after the switch to this root: stop it, it eats the one vCPU.
for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" in
        *init-premount/dropbear*) kill -9 "${p#/proc/}" 2>/dev/null ;;
    esac
done

step() { echo "deploybot-build: $*"; "$@" || { echo "deploybot-build: FAILED: $*"; sync; echo o > /proc/sysrq-trigger; sleep 60; }; }

modprobe dm_crypt
printf '%s' "$PASSPHRASE" | step cryptsetup luksFormat --type luks2 --uuid "$LUKS_UUID" \
    --pbkdf argon2id --pbkdf-memory 131072 --iter-time 1000 --batch-mode --key-file=- /dev/vda
printf '%s' "$PASSPHRASE" | step cryptsetup open --key-file=- /dev/vda root
unset PASSPHRASE
[ -e /dev/mapper/root ] || step dmsetup mknodes
step mkfs.ext4 -q -L root /dev/mapper/root
mkdir -p /mnt
step mount /dev/mapper/root /mnt
step cp -ax /. /mnt/
rm -f /mnt/usr/local/sbin/deploybot-build
for d in dev proc sys run; do step mount --bind "/$d" "/mnt/$d"; done
step chroot /mnt /bin/sh -c "$INITRAMFS_COMMAND"
step sh -c 'cp /mnt/boot/initrd.img-* /boot/'
for d in run sys proc dev; do umount "/mnt/$d"; done
step umount /mnt
step cryptsetup close root
sync
echo "$BUILD_OK"
echo o > /proc/sysrq-trigger
sleep 60
