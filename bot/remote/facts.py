"""What a target says about itself during preflight: os-release, memory, rw-store size."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

KEXEC_MIN_MIB = 1024
KEXEC_COMFORT_MIB = 1536
MEMORY_ADVICE = (
    "boot a minimal NixOS installer ISO with zram on it instead (then no kexec is needed) "
    "and deploy again"
)


@dataclass(frozen=True)
class TargetFacts:
    os_id: str
    os_name: str
    installer: bool
    mem_mib: int
    rw_store: str  # e.g. "256M", "" when the installer has none

    @property
    def needs_kexec(self) -> bool:
        return not self.installer

    def describe(self) -> str:
        kind = "NixOS installer" if self.installer else f"{self.os_name or self.os_id} (kexec)"
        return f"{kind}, {self.mem_mib} MiB RAM"


def parse_os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` as a dict, values unquoted like a shell would."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            continue
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        values[key.strip()] = parts[0] if parts else ""
    return values


def is_nixos_installer(os_release: dict[str, str]) -> bool:
    """nixos-anywhere's own test: ID (or ID_LIKE) nixos and VARIANT_ID installer."""
    ids = {os_release.get("ID", "")} | set(os_release.get("ID_LIKE", "").split())
    return "nixos" in ids and os_release.get("VARIANT_ID") == "installer"


def parse_mem_total_mib(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) // 1024
    raise ValueError("no MemTotal line in /proc/meminfo")


def memory_verdict(facts: TargetFacts) -> tuple[str | None, str | None]:
    """(refusal, warning): kexec needs 1 GiB at least, and is tight under 1.5 GiB."""
    if not facts.needs_kexec:
        return None, None
    if facts.mem_mib < KEXEC_MIN_MIB:
        return (
            f"the target has {facts.mem_mib} MiB of RAM and is not a NixOS installer: the kexec "
            f"step needs at least {KEXEC_MIN_MIB} MiB and would run out of memory. "
            f"Instead, {MEMORY_ADVICE}.",
            None,
        )
    if facts.mem_mib < KEXEC_COMFORT_MIB:
        return None, (
            f"only {facts.mem_mib} MiB of RAM for kexec (nixos-anywhere asks for 1.5 GiB); "
            f"if it fails with 'Failure unpacking initrd', {MEMORY_ADVICE}"
        )
    return None, None
