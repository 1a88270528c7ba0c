"""Reading nixos-anywhere's output: ``### step ###`` phases, error lines, and the verdict.

nixos-anywhere may exit 0 after a failed bootloader install (nixos-anywhere #291), so the
outcome is judged from both the exit code and what was printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """The bot's checklist of an install, in order."""

    UPLOAD_KEYS = "upload keys"
    FACTS = "facts"
    KEXEC = "kexec"
    DISKO = "disko"
    INSTALL = "install"
    REBOOT = "reboot"
    DONE = "done"


_ORDER = {phase: i for i, phase in enumerate(Phase)}


@dataclass(frozen=True)
class PhaseChanged:
    phase: Phase
    text: str


@dataclass(frozen=True)
class OutputLine:
    """The latest meaningful line, for a progress display."""

    text: str


@dataclass(frozen=True)
class ErrorSeen:
    """An error indicator. ``fatal`` ones fail the install even when the exit code is 0."""

    kind: str
    line: str
    hint: str
    fatal: bool
    phase: Phase | None


Event = PhaseChanged | OutputLine | ErrorSeen


@dataclass(frozen=True)
class Outcome:
    ok: bool
    failed_phase: Phase | None
    reason: str


_STEP = re.compile(r"^### (.+) ###$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_STEPS: tuple[tuple[str, Phase], ...] = (
    ("Uploading install SSH keys", Phase.UPLOAD_KEYS),
    ("Gathering machine facts", Phase.FACTS),
    ("Switching system into kexec", Phase.KEXEC),
    ("Generating ", Phase.FACTS),
    ("Uploading the system closure", Phase.INSTALL),
    ("Building the system closure", Phase.INSTALL),
    ("Copying extra files", Phase.INSTALL),
    ("Installing NixOS", Phase.INSTALL),
    ("Uploading ", Phase.DISKO),
    ("Building disko script", Phase.DISKO),
    ("Formatting hard drive with disko", Phase.DISKO),
    ("Rebooting", Phase.REBOOT),
    ("Waiting for the machine to become", Phase.REBOOT),
    ("Done!", Phase.DONE),
)
_NOISE = (
    "Pseudo-terminal will not be allocated",
    "Warning: Permanently added",
    "Warning: Identity file",
    "/usr/bin/ssh-copy-id: INFO:",
    "/usr/bin/ssh-copy-id: WARNING: All keys were skipped",
)
#: OpenSSH's line when a pinned key (GlobalKnownHostsFile) does not match: the target is
#: not the machine confirmed. nixos-anywhere's ssh goes on regardless (docs/nixos-anywhere.md).
HOST_KEY_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_RAM_HINT = (
    "the machine has too little RAM for kexec (about 1.5 GB needed): boot a minimal NixOS "
    "installer ISO instead (no kexec needed) and remount /nix/.rw-store"
)
_KEXEC_HINT = (
    "switching into the NixOS installer with kexec failed (often too little RAM): boot a "
    "NixOS installer ISO instead, or see the remote log above"
)
_BOOT_HINT = (
    "installing the bootloader failed, the machine may not boot: check boot.loader and the "
    "disko ESP/BIOS partition"
)
_SPACE_HINT = (
    "a disk or the installer's store ran out of space: remount /nix/.rw-store bigger "
    "(rw_store_size) or check the partition sizes"
)


@dataclass(frozen=True)
class _Indicator:
    pattern: re.Pattern[str]
    kind: str
    hint: str | None  # None: the matched line is the explanation
    fatal: bool


_INDICATORS: tuple[_Indicator, ...] = (
    _Indicator(
        re.compile(r"Retrieving host facts via SSH failed"),
        "facts",
        "could not read the machine's facts over SSH: check host, port and that root can "
        "log in with the bot's key",
        True,
    ),
    _Indicator(
        re.compile(r"Failure unpacking initrd|Initramfs unpacking failed"),
        "memory",
        _RAM_HINT,
        True,
    ),
    _Indicator(
        re.compile(
            r"Failed to kexec into NixOS installer|Kexec may have failed|^kexec failed",
            re.IGNORECASE,
        ),
        "kexec",
        _KEXEC_HINT,
        True,
    ),
    _Indicator(
        re.compile(
            r"Failed to install bootloader|installation of GRUB on .* failed|grub-install: error"
            r"|^Died at .*grub|^Traceback \(most recent call last\)"
        ),
        "bootloader",
        _BOOT_HINT,
        True,
    ),
    _Indicator(re.compile(r"No space left on device"), "space", _SPACE_HINT, True),
    _Indicator(re.compile(r"^aborted: (.*)"), "aborted", None, True),
    _Indicator(re.compile(r"^error: "), "error", None, False),
    _Indicator(
        re.compile(r"Out of memory|oom-kill|Cannot allocate memory"), "memory", _RAM_HINT, False
    ),
    _Indicator(
        re.compile(r"Permission denied \(publickey"),
        "auth",
        "the machine refused the SSH key: check DEPLOYBOT_SSH_KEY and root's authorized keys",
        False,
    ),
    _Indicator(
        re.compile(
            r"Connection refused|Connection timed out|No route to host|Network is unreachable"
            r"|Could not resolve hostname"
        ),
        "unreachable",
        "the machine could not be reached over SSH: check host, port and that it is up",
        False,
    ),
)
_HINT_MAX = 300
_SPECIFIC = ("aborted", "memory", "facts", "kexec", "bootloader", "space")


def clean_line(raw: str) -> str:
    """What a terminal would show: ANSI codes and control characters removed."""
    if "\r" in raw:
        segments = [s for s in raw.split("\r") if s.strip()]
        raw = segments[-1] if segments else ""
    return _CONTROL.sub("", _ANSI.sub("", raw)).strip()


class OutputParser:
    """Streaming reader of nixos-anywhere output: feed lines, get events, then judge."""

    def __init__(self) -> None:
        self.phase: Phase | None = None
        self.last_line = ""
        self.errors: list[ErrorSeen] = []
        self.done = False
        self.install_finished = False

    def feed(self, line: str) -> list[Event]:
        text = clean_line(line)
        if not text or text.startswith(_NOISE):
            return []
        events: list[Event] = []
        step = _STEP.match(text)
        if step:
            label = step.group(1).strip()
            phase = next((p for prefix, p in _STEPS if label.startswith(prefix)), None)
            if phase is Phase.DONE:
                self.done = True
            if phase is not None and (self.phase is None or _ORDER[phase] > _ORDER[self.phase]):
                self.phase = phase
                events.append(PhaseChanged(phase, label))
            text = label
        else:
            if text == "installation finished!":
                self.install_finished = True
            error = self._indicator(text)
            if error is not None:
                self.errors.append(error)
                events.append(error)
        self.last_line = text
        events.append(OutputLine(text))
        return events

    def _indicator(self, text: str) -> ErrorSeen | None:
        for ind in _INDICATORS:
            match = ind.pattern.search(text)
            if match:
                hint = ind.hint or (match.group(1) if match.groups() else text)
                return ErrorSeen(ind.kind, text, hint[:_HINT_MAX], ind.fatal, self.phase)
        return None

    def judge(self, exit_code: int) -> Outcome:
        """Combine the exit code with what was printed.

        Exit 0 is only a success with ``### Done! ###`` and no fatal error line: a bootloader
        failure before the reboot still exits 0 (#291), and a missing Done line means the
        output is incomplete or the prefix did not run nixos-anywhere. Being wrong towards
        failure costs a look at the log; being wrong towards success waits for a machine
        that will never ask to be unlocked. Plain ``error:`` lines from nix are not fatal by
        themselves: nixos-anywhere prints one when it probes a local build for another
        architecture and then builds remotely; they only explain a non-zero exit.
        """
        fatal = [e for e in self.errors if e.fatal]
        if exit_code == 0:
            if fatal:
                first = self._explain(fatal)
                return Outcome(
                    ok=False,
                    failed_phase=first.phase,
                    reason=f"nixos-anywhere exited 0 but reported an error: {first.hint}; "
                    "the machine may have rebooted into a broken system",
                )
            if not self.done:
                return Outcome(
                    ok=False,
                    failed_phase=self.phase,
                    reason="nixos-anywhere exited 0 without printing '### Done! ###': the "
                    "output is incomplete or the command is not nixos-anywhere; check the log",
                )
            return Outcome(ok=True, failed_phase=None, reason="installed")
        where = f"during {self.phase.value}" if self.phase else "before reaching the machine"
        status = f"was killed by signal {-exit_code}" if exit_code < 0 else f"exited {exit_code}"
        if fatal:
            reason = self._explain(fatal).hint
        elif self.errors:
            reason = self.errors[-1].hint
        elif self.last_line:
            reason = f"last output: {self.last_line[:300]}"
        else:
            reason = "no output"
        return Outcome(
            ok=False, failed_phase=self.phase, reason=f"nixos-anywhere {status} {where}: {reason}"
        )

    @staticmethod
    def _explain(errors: list[ErrorSeen]) -> ErrorSeen:
        specific = [e for e in errors if e.kind in _SPECIFIC]
        return (specific or errors)[0]
