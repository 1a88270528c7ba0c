"""Logging in to lab hosts as a test does: plain OpenSSH ``ssh``, and asyncssh as the bot
would (the operator's key, the stage's host key pinned)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh

from tests.lab.host import LabHost
from tests.lab.lab import Lab


def ssh(
    lab: Lab,
    host: LabHost,
    command: str,
    *,
    initrd: bool = False,
    stdin: str | None = None,
    known_hosts: Path | None = None,
    options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    argv = lab.ssh_argv(host, initrd=initrd, known_hosts=known_hosts, options=options)
    return subprocess.run(
        [*argv, command], input=stdin or "", capture_output=True, text=True, timeout=30
    )


async def connect(lab: Lab, host: LabHost, *, initrd: bool = False) -> asyncssh.SSHClientConnection:
    """asyncssh as the bot would use it: operator key, the stage's host key pinned."""
    stage = "initrd" if initrd else host.stage
    return await asyncssh.connect(
        host.address,
        host.initrd_port if initrd else host.ssh_port,
        username="root",
        client_keys=[str(lab.operator_key)],
        known_hosts=asyncssh.import_known_hosts(host.known_hosts_line(stage)),
        agent_path=None,
        config=[],
        connect_timeout=5,
    )
