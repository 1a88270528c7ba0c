"""bot.nixos_anywhere: argv, the output parser and the process runner (with real processes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.secret import Secret
from bot.flows.deploy.nixos_anywhere import (
    DEFAULT_PREFIX,
    DISK_KEY_FD_AUTO,
    DISK_KEY_SOURCE,
    ErrorSeen,
    NixosAnywhereError,
    NixosAnywhereTimeout,
    OutputLine,
    OutputParser,
    Phase,
    PhaseChanged,
    build_argv,
    parse_prefix,
    run_nixos_anywhere,
)
from bot.remote import nix
from bot.remote.nix import child_env

pytestmark = pytest.mark.timeout(60)

PREFIX = parse_prefix(None)
KEY = Path("/root/.ssh/id_ed25519")


def _argv(**overrides: object) -> list[str]:
    kwargs: dict[str, object] = {
        "flake": ".",
        "attr": "clawsiecats-luks",
        "target_host": "12.121.212.121",
        "ssh_port": 22,
        "ssh_key": KEY,
        "extra_files": Path("/state/jobs/7/mnt"),
        "disk_key_fd": 63,
    }
    kwargs.update(overrides)
    return build_argv(PREFIX, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- argv


def test_argv_shape() -> None:
    assert PREFIX == ["nix", "run", "github:nix-community/nixos-anywhere", "--"]
    assert parse_prefix("  ") == PREFIX
    assert parse_prefix("'/opt/my tools/nixos-anywhere'") == ["/opt/my tools/nixos-anywhere"]
    assert _argv(ssh_options=["ConnectTimeout=10"]) == [
        *PREFIX,
        "--flake",
        ".#clawsiecats-luks",
        "--extra-files",
        "/state/jobs/7/mnt",
        "-i",
        "/root/.ssh/id_ed25519",
        "-p",
        "22",
        "--ssh-option",
        "ConnectTimeout=10",
        "--disk-encryption-keys",
        "/tmp/disk.key",
        "/dev/fd/63",
        "-L",
        "--target-host",
        "root@12.121.212.121",
    ]


def test_argv_options() -> None:
    argv = _argv(
        extra_files=None,
        disk_key_fd=None,
        print_build_logs=False,
        phases=["disko", "install"],
        target_user="nixos",
        ssh_port=2222,
    )
    assert "--extra-files" not in argv
    assert "--disk-encryption-keys" not in argv
    assert "-L" not in argv
    assert argv[-4:] == ["--phases", "disko,install", "--target-host", "nixos@12.121.212.121"]
    assert _argv(disk_key_fd=DISK_KEY_FD_AUTO)[-4] == DISK_KEY_SOURCE
    relative = _argv(ssh_key=Path("keys/id"))
    assert relative[relative.index("-i") + 1] == str(Path.cwd() / "keys/id")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attr", "--debug"),
        ("attr", "-x"),
        ("attr", "a b"),
        ("attr", "a\nb"),
        ("attr", ""),
        ("attr", 'x"y'),
        ("attr", "x#y"),
        ("target_host", "-oProxyCommand=sh"),
        ("target_host", "host --phases kexec"),
        ("target_host", "h\tx"),
        ("target_host", "evil@host"),
        ("target_user", "-l"),
        ("target_user", "root@x"),
        ("flake", "--impure"),
        ("flake", ".#other"),
        ("flake", "path with space"),
        ("ssh_port", 0),
        ("ssh_port", 70000),
        ("ssh_port", True),
        ("disk_key_fd", -5),
        ("disk_key_remote", "/tmp/x; rm -rf /"),
        ("disk_key_remote", "relative.key"),
        ("ssh_options", ["ProxyCommand=sh -c x"]),
        ("ssh_options", ["-oFoo=bar"]),
        ("phases", ["kexec", "format"]),
        ("phases", []),
        ("ssh_key", Path("/k\ney")),
    ],
)
def test_argv_rejects_smuggling(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        _argv(**{field: value})


def _parse_like_nixos_anywhere(argv: list[str]) -> dict[str, object]:
    """The subset of nixos-anywhere's parseArgs for the flags the bot uses."""
    takes = {"--flake": 1, "-i": 1, "-p": 1, "--ssh-option": 1, "--extra-files": 1}
    takes |= {"--target-host": 1, "--phases": 1, "--disk-encryption-keys": 2}
    seen: dict[str, object] = {}
    i = len(PREFIX)
    while i < len(argv):
        flag = argv[i]
        if flag == "-L":
            seen["-L"] = True
            i += 1
            continue
        assert flag in takes, f"unexpected flag or stray word {flag!r}"
        n = takes[flag]
        seen[flag] = argv[i + 1] if n == 1 else tuple(argv[i + 1 : i + 1 + n])
        i += 1 + n
    return seen


name_chars = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=30)


@settings(max_examples=300, deadline=None)
@given(attr=name_chars, host=name_chars)
def test_argv_property_no_smuggled_flags(attr: str, host: str) -> None:
    try:
        argv = _argv(attr=attr, target_host=host)
    except ValueError:
        return
    parsed = _parse_like_nixos_anywhere(argv)
    assert parsed["--flake"] == f".#{attr}"
    assert parsed["--target-host"] == f"root@{host}"
    assert not attr.startswith("-")
    assert not host.startswith("-")
    assert all(not any(c.isspace() for c in word) for word in argv[len(PREFIX) :])


@settings(max_examples=100, deadline=None)
@given(attr=st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,20}", fullmatch=True))
def test_argv_property_plain_names_accepted(attr: str) -> None:
    assert _parse_like_nixos_anywhere(_argv(attr=attr))["--flake"] == f".#{attr}"


# ---------------------------------------------------------------------------- parser

KEXEC_291 = """\
### Uploading install SSH keys ###
/nix/store/abc-openssh-9.6p1/bin/ssh-copy-id: INFO: attempting to log in with the new key(s)
root@12.121.212.121: Permission denied (publickey).
Warning: Permanently added '12.121.212.121' (ED25519) to the list of known hosts.
Number of key(s) added: 1
### Gathering machine facts ###
Pseudo-terminal will not be allocated because stdin is not a terminal.
### Switching system into kexec ###
Downloading kexec tarball, this may take a moment...
kexec/
kexec/run
machine will boot into nixos in 6s...
### Gathering machine facts ###
### Uploading /dev/fd/63 to /tmp/disk.key ###
### Formatting hard drive with disko ###
\x1b[1;32m+ sgdisk --new=1:0:+1M --typecode=1:EF02 /dev/vda\x1b[0m
Creating new GPT entries in memory.
### Uploading the system closure ###
copying path '/nix/store/xyz-nixos-system-clawsiecats' to 'ssh://root@12.121.212.121'...
### Copying extra files ###
### Installing NixOS ###
installing the boot loader...
setting up /etc...
Initializing machine ID from random generator.
Traceback (most recent call last):
  File "/nix/store/lvk-systemd-boot", line 341, in <module>
subprocess.CalledProcessError: Command '['bootctl', 'install']' returned non-zero exit status 1.
installation finished!
### Rebooting ###
### Waiting for the machine to become unreachable due to reboot ###
### Done! ###
"""
CLEAN = "\n".join(
    line
    for line in KEXEC_291.splitlines()
    if not line.startswith(("Traceback", "  File", "subprocess."))
)


def _feed(text: str) -> tuple[OutputParser, list[object]]:
    parser = OutputParser()
    events: list[object] = []
    for line in text.splitlines():
        events += parser.feed(line)
    return parser, events


def test_clean_install_phases_in_order() -> None:
    parser, events = _feed(CLEAN)
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases == list(Phase)
    assert parser.done
    assert parser.install_finished
    outcome = parser.judge(0)
    assert (outcome.ok, outcome.failed_phase) == (True, None)
    # the early ssh-copy-id refusal is a hint, not a failure
    assert [e.kind for e in parser.errors] == ["auth"]
    lines = [e.text for e in events if isinstance(e, OutputLine)]
    assert "+ sgdisk --new=1:0:+1M --typecode=1:EF02 /dev/vda" in lines
    assert not any("Pseudo-terminal" in line or "Permanently added" in line for line in lines)
    assert parser.last_line == "Done!"


def test_issue_291_exit_0_with_bootloader_error_is_a_failure() -> None:
    parser, events = _feed(KEXEC_291)
    errors = [e for e in events if isinstance(e, ErrorSeen) and e.fatal]
    assert [e.kind for e in errors] == ["bootloader"]
    outcome = parser.judge(0)
    assert not outcome.ok
    assert outcome.failed_phase is Phase.INSTALL
    assert "bootloader" in outcome.reason
    assert "exited 0" in outcome.reason


@pytest.mark.parametrize(
    ("tail", "code", "phase", "words"),
    [
        (
            "### Switching system into kexec ###\n[    0.9] Failure unpacking initrd\n"
            "Kexec may have failed - check output above\nKexec failed",
            1,
            Phase.KEXEC,
            "too little RAM",
        ),
        (
            "### Switching system into kexec ###\nmachine will boot into nixos in 6s...\n"
            "### Gathering machine facts ###\naborted: Failed to kexec into NixOS installer",
            1,
            Phase.KEXEC,
            "kexec failed",
        ),
        (
            "aborted: Retrieving host facts via SSH failed. Check with --debug for the root cause",
            1,
            Phase.FACTS,
            "facts over SSH",
        ),
        ("aborted: Unknown phase: format", 1, Phase.FACTS, "Unknown phase: format"),
        (
            "### Uploading the system closure ###\nerror: writing to file: No space left on device",
            1,
            Phase.INSTALL,
            "rw_store_size",
        ),
        ("some last words", 255, Phase.FACTS, "exited 255 during facts: last output: some"),
        ("", -9, Phase.FACTS, "killed by signal 9"),
    ],
)
def test_failures_name_phase_and_reason(tail: str, code: int, phase: Phase, words: str) -> None:
    head = "### Uploading install SSH keys ###\n### Gathering machine facts ###\n"
    outcome = _feed(head + tail)[0].judge(code)
    assert not outcome.ok
    assert outcome.failed_phase is phase
    assert words.lower() in outcome.reason.lower(), outcome.reason


def test_nix_error_then_remote_build_is_not_a_failure() -> None:
    parser, _ = _feed(
        "error: a 'aarch64-linux' with features {} is required to build '/nix/store/e.drv'\n"
        + CLEAN
    )
    assert parser.judge(0).ok
    assert "error" in [e.kind for e in parser.errors]


def test_latest_hint_explains_a_plain_failure() -> None:
    parser, _ = _feed(
        "### Uploading install SSH keys ###\nroot@h: Permission denied (publickey).\n"
        "### Gathering machine facts ###\n### Uploading the system closure ###\n"
        "error: cannot add path '/nix/store/x' because it lacks a signature by a trusted key"
    )
    outcome = parser.judge(1)
    assert outcome.failed_phase is Phase.INSTALL
    assert "lacks a signature" in outcome.reason


def test_failure_before_any_step() -> None:
    parser, _ = _feed(
        "evaluating flake...\nerror: builder for '/nix/store/q-disko.drv' failed with exit code 1"
    )
    outcome = parser.judge(1)
    assert outcome.failed_phase is None
    assert "before reaching the machine" in outcome.reason
    assert "builder for" in outcome.reason
    assert OutputParser().judge(1).reason.endswith("no output")


def test_exit_0_without_done_is_not_trusted() -> None:
    parser, _ = _feed("### Uploading install SSH keys ###\n### Gathering machine facts ###")
    outcome = parser.judge(0)
    assert not outcome.ok
    assert outcome.failed_phase is Phase.FACTS
    assert "Done!" in outcome.reason


def test_terminal_noise_is_cleaned() -> None:
    parser = OutputParser()
    events = parser.feed("copying 10%\rcopying 55%\r\x1b[2Kcopying 100%\x07")
    assert events == [OutputLine("copying 100%")]
    assert parser.feed("   ") == []
    assert parser.feed("\x1b[31m### Done! ###\x1b[0m")[0] == PhaseChanged(Phase.DONE, "Done!")


# ---------------------------------------------------------------------------- process

FAKE = r"""
import hashlib, json, os, signal, subprocess, sys, time
args = sys.argv[1:]
mode = args[0]
if mode == "key":
    i = args.index("--disk-encryption-keys")
    remote, local = args[i + 1], args[i + 2]
    with open(local, "rb") as f:
        data = f.read()
    print(f"### Uploading {local} to {remote} ###", flush=True)
    print("sha256", hashlib.sha256(data).hexdigest(), len(data))
    print("argv", json.dumps(args))
    def is_open(fd):
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True
    print("fds", json.dumps([fd for fd in range(256) if is_open(fd)]))
    print("oops the key leaked: " + data.decode(errors="replace"), flush=True)
    print("a" * 4094 + data.decode(errors="replace") + "b" * 10000, flush=True)
    print("### Done! ###")
elif mode == "group":
    pids, trap = args[1], args[2] == "trap"
    if trap:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = "import signal, time\n"
    if trap:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    with open(pids, "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    print("### Uploading install SSH keys ###", flush=True)
    time.sleep(60)
elif mode == "flood":
    out = sys.stdout.buffer
    line = b"x" * 99 + b"\n"
    for _ in range(50_000):
        out.write(line)
    out.write(b"y" * 5_000_000 + b"\n")
    out.write(b"tail without newline")
    out.flush()
elif mode == "daemon":
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("leader leaves", p.pid, flush=True)
elif mode == "exit":
    print("bye", file=sys.stderr, flush=True)
    sys.exit(int(args[1]))
"""


@pytest.fixture
def fake(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_nixos_anywhere.py"
    script.write_text(FAKE)
    return [sys.executable, str(script)]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0
        self.longest = 0

    def __call__(self, line: str) -> None:
        self.count += 1
        self.longest = max(self.longest, len(line))
        if len(self.lines) < 50:
            self.lines.append(line)


async def test_disk_key_goes_through_the_pipe_only(fake: list[str]) -> None:
    passphrase = "tr0ub4dor & 3 ünïcode"
    secret = Secret(passphrase)
    got: list[str] = []

    async def on_line(line: str) -> None:
        got.append(line)

    argv = build_argv(
        [*fake, "key"],
        flake=".",
        attr="m",
        target_host="127.0.0.1",
        ssh_port=22,
        ssh_key=KEY,
        extra_files=None,
        disk_key_fd=DISK_KEY_FD_AUTO,
    )
    code = await run_nixos_anywhere(
        argv, disk_key=secret, on_line=on_line, env=None, cwd=None, timeout=20
    )
    assert code == 0
    digest = hashlib.sha256(passphrase.encode()).hexdigest()
    assert f"sha256 {digest} {len(passphrase.encode())}" in got
    seen_argv = json.loads(next(x for x in got if x.startswith("argv "))[5:])
    source = seen_argv[seen_argv.index("--disk-encryption-keys") + 2]
    assert source.startswith("/dev/fd/")
    assert all(passphrase not in a for a in seen_argv)
    assert "oops the key leaked: ***" in got
    assert all(passphrase not in line for line in got)
    edge = next(x for x in got if x.startswith("a" * 4094))
    assert edge.startswith("a" * 4094 + "**")
    assert "tr" not in edge
    assert edge.endswith("bytes cut]")
    # only stdio and the key pipe were inherited
    fds = json.loads(next(x for x in got if x.startswith("fds "))[4:])
    assert fds == [0, 1, 2, int(source.rsplit("/", 1)[1])]
    parser = OutputParser()
    for line in got:
        parser.feed(line)
    assert parser.phase is Phase.DONE
    assert parser.judge(code).ok


async def test_large_disk_key_does_not_deadlock(fake: list[str]) -> None:
    big = os.urandom(300_000)
    got: list[str] = []
    argv = [*fake, "key", "--disk-encryption-keys", "/tmp/disk.key", DISK_KEY_SOURCE]
    code = await run_nixos_anywhere(
        argv, disk_key=Secret(big), on_line=got.append, env=None, cwd=None, timeout=20
    )
    assert code == 0
    assert f"sha256 {hashlib.sha256(big).hexdigest()} {len(big)}" in got


async def test_placeholder_and_key_must_match(fake: list[str]) -> None:
    with pytest.raises(ValueError, match="exactly once"):
        await run_nixos_anywhere(
            [*fake, "exit", "0"], disk_key=Secret("k"), on_line=print, env=None, cwd=None, timeout=5
        )
    with pytest.raises(ValueError, match="no disk key"):
        await run_nixos_anywhere(
            [*fake, DISK_KEY_SOURCE], disk_key=None, on_line=print, env=None, cwd=None, timeout=5
        )


async def test_exit_code_and_merged_stderr(fake: list[str], tmp_path: Path) -> None:
    got: list[str] = []
    code = await run_nixos_anywhere(
        [*fake, "exit", "3"], disk_key=None, on_line=got.append, env=None, cwd=tmp_path, timeout=10
    )
    assert code == 3
    assert got == ["bye"]


async def test_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(NixosAnywhereError, match="DEPLOYBOT_NIXOS_ANYWHERE"):
        await run_nixos_anywhere(
            [str(tmp_path / "nope")], disk_key=None, on_line=print, env=None, cwd=None, timeout=5
        )


async def test_ten_megabytes_with_bounded_lines(fake: list[str]) -> None:
    lines = Lines()
    started = time.perf_counter()
    code = await run_nixos_anywhere(
        [*fake, "flood"], disk_key=None, on_line=lines, env=None, cwd=None, timeout=30
    )
    elapsed = time.perf_counter() - started
    print(f"10 MB of output in {elapsed:.2f}s")
    assert code == 0
    assert lines.count == 50_002
    assert lines.longest <= 4096 + 40
    assert lines.lines[0] == "x" * 99


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _started(path: Path) -> bool:
    return path.exists() and len(path.read_text().split()) == 2


async def _wait_for(path: Path, deadline: float = 10) -> None:
    end = time.monotonic() + deadline
    while not _started(path):
        assert time.monotonic() < end, "fake nixos-anywhere did not start"
        await asyncio.sleep(0.02)


async def _assert_dead(pids: list[int], deadline: float = 5) -> None:
    end = time.monotonic() + deadline
    while any(_alive(p) for p in pids):
        assert time.monotonic() < end, f"still alive: {[p for p in pids if _alive(p)]}"
        await asyncio.sleep(0.02)


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("trap", ["plain", "trap"])
async def test_cancel_kills_the_whole_group(
    fake: list[str], tmp_path: Path, trap: str, reaper: list[int]
) -> None:
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(
        run_nixos_anywhere(
            [*fake, "group", str(pidfile), trap],
            disk_key=None,
            on_line=print,
            env=None,
            cwd=None,
            timeout=30,
            kill_grace=0.3,
        )
    )
    await _wait_for(pidfile)
    pids = _pids(pidfile)
    reaper.extend(pids)
    assert all(_alive(p) for p in pids)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 3
    await _assert_dead(pids)


async def test_timeout_stops_the_group(fake: list[str], tmp_path: Path, reaper: list[int]) -> None:
    pidfile = tmp_path / "pids"
    started = time.perf_counter()
    with pytest.raises(NixosAnywhereTimeout, match="did not finish within 1 s"):
        await run_nixos_anywhere(
            [*fake, "group", str(pidfile), "trap"],
            disk_key=None,
            on_line=print,
            env=None,
            cwd=None,
            timeout=1,
            kill_grace=0.2,
        )
    assert time.perf_counter() - started < 4
    pids = _pids(pidfile)
    reaper.extend(pids)
    await _assert_dead(pids)


async def test_leftover_holding_the_pipe_is_killed(fake: list[str], reaper: list[int]) -> None:
    got: list[str] = []
    started = time.perf_counter()
    code = await run_nixos_anywhere(
        [*fake, "daemon"],
        disk_key=None,
        on_line=got.append,
        env=None,
        cwd=None,
        timeout=20,
        drain_timeout=0.3,
    )
    assert code == 0
    assert len(got) == 1
    assert got[0].startswith("leader leaves ")
    assert time.perf_counter() - started < 5
    leftover = int(got[0].split()[-1])
    reaper.append(leftover)
    await _assert_dead([leftover])


async def test_on_line_failure_stops_the_process(fake: list[str], tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    async def boom(line: str) -> None:
        raise RuntimeError("chat is down")

    with pytest.raises(RuntimeError, match="chat is down"):
        await run_nixos_anywhere(
            [*fake, "group", str(pidfile), "plain"],
            disk_key=None,
            on_line=boom,
            env=None,
            cwd=None,
            timeout=20,
            kill_grace=0.3,
        )
    await _assert_dead(_pids(pidfile))


def test_child_env_withholds_the_bots_secrets() -> None:
    env = child_env(
        {
            "PATH": "/bin",
            "HOME": "/root",
            "NIX_PATH": "nixpkgs=x",
            "TELEGRAM_BOT_TOKEN": "1:2",
            "DEPLOYBOT_ADMINS": "1",
            "SOPS_AGE_KEY": "AGE-SECRET-KEY-1",
            "SSH_PRIVATE_KEY": "k",
            "SSH_AUTH_SOCK": "/s",
        }
    )
    assert env == {"PATH": "/bin", "HOME": "/root", "NIX_PATH": "nixpkgs=x"}


def test_default_prefix_constant() -> None:
    assert DEFAULT_PREFIX.split() == PREFIX


def test_nix_build_argv_and_store_paths() -> None:
    argv = nix.build_argv(
        ["nix"], flake="/srv/flake", attr="clawsiecats-luks", outputs=("diskoScript", "toplevel")
    )
    assert argv == [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "build",
        "--no-link",
        "--print-out-paths",
        "-L",
        '/srv/flake#nixosConfigurations."clawsiecats-luks".config.system.build.diskoScript',
        '/srv/flake#nixosConfigurations."clawsiecats-luks".config.system.build.toplevel',
    ]
    disko = "/nix/store/" + "a" * 32 + "-disko"
    top = "/nix/store/" + "b" * 32 + "-nixos-system-clawsiecats-25.05"
    fetched = "  /nix/store/" + "f" * 32 + "-glibc-2.40"  # "these paths will be fetched"
    lines = ["clawsiecats> building", disko, fetched, top + "  ", "/nix/store/short-x"]
    assert nix.Finished(0, lines).store_paths() == [disko, top]
    with pytest.raises(ValueError, match="DEPLOYBOT_NIX is empty"):
        nix.build_argv([], flake=".", attr="x", outputs=("toplevel",))


def test_store_paths_follow_nix_grammar() -> None:
    """Nix's base32 has no e, o, t, u; a name is 0-9A-Za-z+-._?= and not '.'/'..'."""
    good = "0123456789abcdfghijklmnpqrsvwxyz"
    assert nix.STORE_PATH.fullmatch(f"/nix/store/{good}-nixos-system-x_1.2+3?=4")
    assert nix.STORE_PATH.fullmatch(f"/nix/store/{good}-.hidden")
    for letter in "eotu":
        assert not nix.STORE_PATH.fullmatch(f"/nix/store/{letter * 32}-x")
    for name in (".", "..", ".-x", "..-x", "x y", "x/y", "x;y", "", "x" * 212):
        assert not nix.STORE_PATH.fullmatch(f"/nix/store/{good}-{name}"), name
    assert nix.STORE_PATH.fullmatch(f"/nix/store/{good}-{'x' * 211}")


def test_store_paths_and_ssh_options_reach_the_argv_checked() -> None:
    disko = "/nix/store/" + "a" * 32 + "-disko"
    top = "/nix/store/" + "b" * 32 + "-nixos-system-x"
    argv = build_argv(
        ["nixos-anywhere"],
        flake="/srv/flake",
        attr="x",
        target_host="192.0.2.1",
        ssh_port=22,
        ssh_key=Path("/k"),
        extra_files=None,
        disk_key_fd=None,
        ssh_options=("LogLevel=ERROR", "GlobalKnownHostsFile=/state/staging/job-1.known_hosts"),
        store_paths=(disko, top),
    )
    assert argv[argv.index("--store-paths") + 1 : argv.index("--store-paths") + 3] == [disko, top]
    # With --flake the real script evaluates and builds again before its first ssh.
    assert "--flake" not in argv
    assert not any("/srv/flake" in word for word in argv)
    assert "GlobalKnownHostsFile=/state/staging/job-1.known_hosts" in argv
    for bad in ("--flake", "/nix/store/x y", "/tmp/evil"):
        with pytest.raises(ValueError, match="store path"):
            build_argv(
                ["nixos-anywhere"],
                flake="/srv/flake",
                attr="x",
                target_host="192.0.2.1",
                ssh_port=22,
                ssh_key=Path("/k"),
                extra_files=None,
                disk_key_fd=None,
                store_paths=(bad, top),
            )


def test_store_paths_ignore_what_nix_lists_on_stderr() -> None:
    """Real nix lists the derivations it will build on stderr, which arrives merged."""
    disko = "/nix/store/" + "a" * 32 + "-disko"
    system = "/nix/store/" + "b" * 32 + "-nixos-system-clawsiecats-25.05"
    lines = [
        "these 2 derivations will be built:",
        "  /nix/store/" + "c" * 32 + "-disko.drv",
        "  /nix/store/" + "d" * 32 + "-nixos-system-clawsiecats-25.05.drv",
        "building '/nix/store/" + "c" * 32 + "-disko.drv'...",
        disko,
        system,
    ]
    assert nix.Finished(0, lines).store_paths() == [disko, system]
