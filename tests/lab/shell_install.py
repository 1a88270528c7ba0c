"""What an installer answers to nixos-anywhere: facts, kexec, disko, extra files, install.

The commands are the ones the real nixos-anywhere sends over SSH; the stand-in sends
the same. disko formats a real LUKS2 header from ``/tmp/disk.key`` (the installer's RAM),
reading the key as disko does (``$(cat file)``: trailing newlines dropped).
"""

from __future__ import annotations

import shutil
import subprocess

from tests.lab import generations, keys
from tests.lab.shell_base import Ctx

DISK_KEY = "/tmp/disk.key"
KEXEC_LOG = "/root/kexec/nixos-anywhere.log"
KEXEC_MIN_MIB = 1024


def facts(ctx: Ctx) -> int:
    """The facts get-facts.sh prints, camel-cased as nixos-anywhere reads them."""
    state = ctx.state
    nixos = state.os != "debian" or state.kexec
    installer = ctx.stage == "installer" and nixos
    yes_no = {True: "y", False: "n"}
    lines = {
        "isOs": "Linux",
        "isArch": "x86_64",
        "isKexec": yes_no[state.kexec],
        "isNixos": yes_no[nixos],
        "isInstaller": yes_no[installer],
        "isContainer": "none",
        "isRoot": "y",
        "hasIpv6Only": "n",
        "hasTar": "y",
        "hasCpio": "y",
        "hasSudo": "n",
        "hasDoas": "n",
        "hasWget": yes_no[not nixos],
        "hasCurl": "y",
        "hasSetsid": "y",
        "hasNixOSFacter": "n",
    }
    ctx.out("".join(f"{k}={v}\n" for k, v in lines.items()))
    return 0


def kexec_script(ctx: Ctx) -> int:
    """Run the uploaded kexec script: out of memory below 1 GiB, else into the installer."""
    state = ctx.state
    log_lines = [
        "Downloading kexec tarball, this may take a moment...",
        "kexec/",
        "kexec/ip",
        "kexec/kexec",
        "kexec/run",
        "kexec/initrd",
        "kexec/bzImage",
    ]
    if state.mem_mib < KEXEC_MIN_MIB:
        log_lines += [
            "Failure unpacking initrd: Cannot allocate memory",
            '/root/kexec/kexec/run: line 32:  1337 Killed   "$SCRIPT_DIR/kexec" --load '
            '"$SCRIPT_DIR/bzImage" --kexec-syscall-auto --initrd="$SCRIPT_DIR/initrd"',
        ]
        ok = False
    else:
        log_lines.append("machine will boot into nixos in 6s...")
        ok = True
    text = "".join(line + "\n" for line in log_lines)
    log = ctx.resolve(KEXEC_LOG)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    ctx.out(text)
    if not ok:
        ctx.out("Kexec may have failed - check output above\n")
        return 1
    ctx.ask("kexec")
    return 0


def disko(ctx: Ctx, args: list[str]) -> int:
    """Destroy the disk, then create it: a LUKS2 header from /tmp/disk.key if LUKS."""
    if ctx.stage != "installer":
        return ctx.fail("disko: lab: disko only runs in an installer", 1)
    state = ctx.state
    key: bytes | None = None
    if state.luks:
        key_file = ctx.resolve(DISK_KEY)
        if not key_file.is_file():
            return ctx.fail(f"cat: {DISK_KEY}: No such file or directory", 1)
        key = key_file.read_bytes().rstrip(b"\n")
    ctx.out("+ umount -Rv /mnt\n+ wipefs --all -f /dev/vda\n+ sgdisk --clear /dev/vda\n")
    root = ctx.paths.root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o755)
    if key is not None:
        ctx.out(f"+ cryptsetup -q luksFormat {state.pending_device or '/dev/vda2'} --type luks2\n")
        for index in range(max(len(state.volumes), 1)):
            keys.luks_format(state.cryptsetup, ctx.paths.volume_image(index), key)
        ctx.out("+ cryptsetup open /dev/vda2 crypted\n+ mkfs.ext4 /dev/mapper/crypted\n")
    else:
        ctx.paths.luks_image.unlink(missing_ok=True)
        ctx.out("+ mkfs.ext4 /dev/vda2\n")
    ctx.out("+ mount /dev/vda2 /mnt\n")
    ctx.ask("formatted")
    return 0


def tar_extract(ctx: Ctx, args: list[str]) -> int:
    """``tar -C DIR -xf- [--no-same-owner]``: the extra files, modes kept."""
    if "-C" not in args or not any(a.startswith("-x") or a == "-xf-" for a in args):
        return ctx.fail("tar: lab: only `tar -C DIR -xf-` is supported", 2)
    dest = ctx.resolve(args[args.index("-C") + 1])
    if not dest.is_dir():
        return ctx.fail(f"tar: {args[args.index('-C') + 1]}: Cannot open: No such file", 2)
    argv = ["tar", "-C", str(dest), "-x", "-p", "-f", "-"]
    if "--no-same-owner" in args:
        argv.append("--no-same-owner")
    return subprocess.run(argv, stdin=ctx.stdin, check=False).returncode


def chown_pairs(ctx: Ctx) -> int:
    """``while read file ownership; do chown -R "$ownership" "/mnt/$file"; done``."""
    from tests.lab.shell_system import cmd_chown

    for raw in ctx.stdin.read().decode().splitlines():
        fields = raw.split()
        if len(fields) == 2 and cmd_chown(ctx, ["-R", fields[1], "/mnt/" + fields[0]]) != 0:
            return 1
    return 0


def nixos_install(ctx: Ctx, args: list[str], copy_host_keys: bool = False) -> int:
    if ctx.stage != "installer":
        return ctx.fail("nixos-install: command not found", 127)
    if not ctx.state.formatted:
        return ctx.fail("The mount point /mnt doesn't exist.", 1)
    system = args[args.index("--system") + 1] if "--system" in args else "/nix/store/x-system"
    root = ctx.paths.root
    if copy_host_keys:
        ssh_dir = root / "etc/ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        for key in sorted(ctx.resolve("/etc/ssh").glob("ssh_host_*")):
            if not (ssh_dir / key.name).exists():
                shutil.copy2(key, ssh_dir / key.name)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/NIXOS").write_text("")
    generations.install(root, generations.default_closure(system))
    (root / "tmp").mkdir(exist_ok=True)
    ctx.out(
        f"copying path '{system}' from 'local'...\n"
        "installing the boot loader...\n"
        "setting up /etc...\n"
        "updating GRUB 2 menu...\n"
        "installing the GRUB 2 boot loader on /dev/vda...\n"
        "Installing for i386-pc platform.\n"
        "Installation finished. No error reported.\n"
        "installation finished!\n"
    )
    ctx.ask("installed", system=system)
    return 0


def _path_info(ctx: Ctx, args: list[str], paths: list[str]) -> int:
    """``nix path-info --recursive --size PATH`` on the booted host, read from its store
    (``/run/current-system`` followed as the real one follows it)."""
    if not any("nix-command" in a.split() for a in args):
        return ctx.fail(
            "error: experimental Nix feature 'nix-command' is disabled; add "
            "'--extra-experimental-features nix-command' to enable it"
        )
    if not {"--recursive", "-r"} & set(args) or not {"--size", "-s"} & set(args) or not paths:
        return ctx.fail("error: lab: only `nix path-info --recursive --size PATH` is simulated")
    root = ctx.paths.root
    out = []
    for path in paths:
        if path.startswith("/run/"):
            path = generations.run_link(root, path.removeprefix("/run/")) or path
        listed = generations.path_info_lines(root, path)
        if listed is None:
            return ctx.fail(f"error: path '{path}' is not valid")
        out.append(listed)
    ctx.out("".join(out))
    return 0


def nix(ctx: Ctx, args: list[str]) -> int:
    words = [
        a
        for i, a in enumerate(args)
        if not a.startswith("-") and not (i and args[i - 1].endswith("experimental-features"))
    ]
    if words[:3] == ["config", "show", "system"]:
        ctx.out("x86_64-linux\n")
        return 0
    if words[:1] == ["path-info"] and ctx.stage == "booted":
        return _path_info(ctx, args, words[1:])
    return ctx.fail(f"error: lab: unsupported nix command: {' '.join(args)}", 1)
