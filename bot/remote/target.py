"""One machine as the bot reaches it: every SSH action on a machine goes through its Target.

A Target knows the machine's address, the bot's client key and the keys the machine must
present (:class:`~bot.remote.place.Pins`), so no flow builds an endpoint or a polling loop
of its own. Connections are always pinned: to the system key, the initrd key, or the
installer key a person confirmed.

The Target is the one place that reads a boot id, reboots a machine, probes its ports and
hands out a held login (:class:`~bot.remote.login.Login`). A Target kept by the
:class:`~bot.remote.fleet.Fleet` also holds one login to the booted system open between
probes (SSH keepalives notice when it dies), so a probe round over a fleet costs one exec
per machine instead of a handshake and five channels. It is closed when the machine is
not found up, when its system pin changes, when the machine leaves the inventory, and
when the bot stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh

from bot.config.inventory import Machine
from bot.core.keys import fingerprint, parse_public_key
from bot.core.poll import poll_until
from bot.core.text import one_line
from bot.remote.health import (
    BOOT_ID,
    DEFAULT_LIMITS,
    CheckLimits,
    Health,
    Probe,
    boot_id_in,
    read_health,
    read_health_in,
)
from bot.remote.login import Login
from bot.remote.place import Location, Pins, Place, locate, not_installed
from bot.remote.shell import RemoteShell, ShellFailed
from bot.remote.ssh import (
    AuthRefused,
    ConnectionDropped,
    HostKeyMismatch,
    SshEndpoint,
    SshError,
    connect,
    probe_tcp,
    run,
)

LOOK_TIMEOUT = 3.0
#: A public key line is well under this; anything longer is not one.
KEY_READ_LIMIT = 16 * 1024


class RebootFailed(Exception):
    """The machine could not be asked to reboot; the message says why."""


class KeyReadFailed(Exception):
    """The initrd key could not be read from the booted system; the message says why."""


@dataclass(frozen=True)
class Reach:
    """How the bot reaches machines: its key, its patience with SSH, how often it looks."""

    client_key: Path
    ssh_timeout: float = 10.0
    poll: float = 1.0


class Target:
    """A machine, its pins and the bot's way in."""

    def __init__(
        self,
        machine: Machine,
        pins: Pins,
        reach: Reach,
        *,
        keep: bool = False,
        limits: CheckLimits = DEFAULT_LIMITS,
    ) -> None:
        self.machine = machine
        self.pins = pins
        self.reach = reach
        self.keep = keep
        self.limits = limits
        self._kept = Login(self.system, machine.name)
        self._shell_busy = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.machine.name

    def at(self, address: str) -> Target:
        """The same machine reached at ``address`` (its host resolved once); keeps nothing."""
        return Target(
            dataclasses.replace(self.machine, host=address),
            self.pins,
            self.reach,
            limits=self.limits,
        )

    def with_pins(self, *, system: str, initrd: str) -> Target:
        """The same machine judged by other pins (a deploy's new keys); it keeps nothing."""
        pins = replace(self.pins, system=system, initrd=initrd, conflicts=())
        return Target(self.machine, pins, self.reach, limits=self.limits)

    def repin(self, pins: Pins) -> None:
        """Judge by ``pins`` from now on; a kept login made under another system key ends."""
        if pins.system != self.pins.system:
            self.close()
        self.pins = pins

    @property
    def connected(self) -> bool:
        """Whether a kept login to the system is open."""
        return self._kept.connected

    def close(self) -> None:
        """End the kept login, if any."""
        self._kept.close()

    # -- connections -----------------------------------------------------------------------

    def endpoint(
        self, *, initrd: bool = False, key: str | None = None, user: str = ""
    ) -> SshEndpoint:
        m = self.machine
        return SshEndpoint(
            host=m.host,
            port=m.initrd_port if initrd else m.ssh_port,
            user=user or ("root" if initrd else m.ssh_user),
            client_key=self.reach.client_key,
            host_key=key if key is not None else (self.pins.initrd if initrd else self.pins.system),
        )

    async def system(self) -> asyncssh.SSHClientConnection:
        """A login to the booted system, pinned to its system key."""
        return await connect(self.endpoint(), timeout=self.reach.ssh_timeout)

    async def initrd(self) -> asyncssh.SSHClientConnection:
        """A login to the initrd as root, pinned to its initrd key."""
        return await connect(self.endpoint(initrd=True), timeout=self.reach.ssh_timeout)

    async def installer(self, key: str) -> asyncssh.SSHClientConnection:
        """A root login to whatever answers on the SSH port, pinned to ``key`` (the key a
        person confirmed at first contact)."""
        return await connect(self.endpoint(key=key, user="root"), timeout=self.reach.ssh_timeout)

    def login(self, *, initrd: bool = False) -> Login:
        """A held login of the caller's own, to the system or (``initrd``) the initrd,
        made at first use; the caller closes it."""
        return Login(self.initrd if initrd else self.system, self.name)

    # -- looking -----------------------------------------------------------------------------

    async def locate(self, *, timeout: float = LOOK_TIMEOUT) -> Location:
        """Where the machine is now (one look at its ports)."""
        return await locate(self.machine, self.pins, timeout=timeout)

    async def wait_for(
        self, places: Collection[Place], *, timeout: float, poll: float | None = None
    ) -> Location:
        """Look every ``poll`` seconds until the machine is in one of ``places``;
        PollTimeout (its ``last`` the final Location) otherwise."""
        wanted = frozenset(places)
        return await poll_until(
            self.locate,
            lambda seen: seen.place in wanted,
            timeout=timeout,
            interval=self.reach.poll if poll is None else poll,
        )

    async def port_open(self, *, initrd: bool = False, timeout: float = LOOK_TIMEOUT) -> bool:
        """Whether the SSH port (or the initrd's) accepts TCP within ``timeout``; never raises."""
        m = self.machine
        return await probe_tcp(m.host, m.initrd_port if initrd else m.ssh_port, timeout=timeout)

    async def ports_open(self, *, timeout: float = LOOK_TIMEOUT) -> tuple[bool, bool | None]:
        """Whether the SSH port and (LUKS) the initrd port accept TCP, probed together;
        never raises."""
        if not self.machine.luks:
            return await self.port_open(timeout=timeout), None
        ssh, initrd = await asyncio.gather(
            self.port_open(timeout=timeout), self.port_open(initrd=True, timeout=timeout)
        )
        return ssh, initrd

    async def boot_id(self, *, initrd: bool = False, on: Login | None = None) -> str:
        """The kernel's boot id, over ``on`` (a login of the caller's, left open) or a
        login made for it to the system or the initrd; "" when unreadable."""
        login = on if on is not None else self.login(initrd=initrd)
        try:
            return await read_boot_id(await login.open(), self.reach.ssh_timeout)
        except SshError:
            return ""
        finally:
            if on is None:
                login.close()

    async def health(self) -> Probe:
        """Log in with the pinned system key (or reuse the kept login) and read its health;
        if that fails, say where the machine is instead."""
        reused = self.connected
        if self.pins.conflicts:
            return Probe(Place.WRONG_KEY, "its keys contradict: " + "; ".join(self.pins.conflicts))
        try:
            conn = await self._system_login()
        except HostKeyMismatch as exc:
            if self.pins.installer and exc.actual_fingerprint == fingerprint(self.pins.installer):
                return Probe(Place.INSTALLER, "answers with its installer's key")
            if not self.pins.installed:
                return Probe(Place.INSTALLER, not_installed(exc.actual_fingerprint))
            return Probe(
                Place.WRONG_KEY, f"answers with another host key ({exc.actual_fingerprint})"
            )
        except AuthRefused:
            return Probe(Place.WRONG_KEY, "refuses the bot's key")
        except SshError as exc:
            if self.machine.luks and await self._in_initrd():
                return Probe(Place.INITRD, "waits for its disk passphrase")
            return Probe(Place.NOTHING, one_line(str(exc)))
        try:
            health = await self.read_health(conn)
        except SshError as exc:
            self._release(conn, broken=True)
            if reused:  # the kept login died since the last probe: look again, afresh
                return await self.health()
            return Probe(Place.WRONG_KEY, f"login worked, then {one_line(str(exc))}")
        self._release(conn, broken=False)
        return Probe(Place.SYSTEM, health=health)

    async def _system_login(self) -> asyncssh.SSHClientConnection:
        """The kept login when it is open, else a new one (kept if this Target keeps)."""
        if not self.keep:
            return await self.system()
        return await self._kept.open()

    def _release(self, conn: asyncssh.SSHClientConnection, *, broken: bool) -> None:
        if conn is not self._kept.current:
            conn.close()
        elif broken:
            self.close()

    async def read_health(self, conn: asyncssh.SSHClientConnection) -> Health:
        """Through the shell kept on the kept login when it takes one, else one exec."""
        if conn is self._kept.current and self._kept.takes_shell:
            async with self._shell_busy:
                health = await self._read_in_shell(conn)
            if health is not None:
                return health
        return await read_health(
            conn,
            self.machine,
            ssh_timeout=self.reach.ssh_timeout,
            limits=self.limits,
        )

    async def health_in(self, shell: RemoteShell) -> Health:
        """The health check through ``shell``, a shell on a login of the caller's own
        (ShellFailed when it went wrong)."""
        return await read_health_in(
            shell,
            self.machine,
            ssh_timeout=self.reach.ssh_timeout,
            limits=self.limits,
        )

    async def _read_in_shell(self, conn: asyncssh.SSHClientConnection) -> Health | None:
        try:
            shell = await self._kept.shell_here(conn)
        except ConnectionDropped:  # it answers single execs only
            return None
        try:
            return await self.health_in(shell)
        except ShellFailed as exc:
            if exc.timed_out:  # a machine gone silent: do not wait on it twice
                self.close()
                raise ConnectionDropped("the kept login stopped answering") from None
            self._kept.exec_only()  # not again on this login
            return None

    async def _in_initrd(self) -> bool:
        if not self.pins.initrd:
            return False
        seen = await self.locate(timeout=self.reach.ssh_timeout)
        return seen.place is Place.INITRD

    async def read_initrd_key(self) -> str:
        """The public half of ``initrd_host_key_file``, read over a pinned login to the
        booted system: ``ssh-keygen -y -f FILE``, else ``FILE.pub``. The channel is
        authenticated by the system key, so no trust on first use is involved."""
        path = self.machine.initrd_host_key_file
        if not path:
            raise KeyReadFailed("initrd_host_key_file is empty in the inventory")
        try:
            conn = await self.system()
        except SshError as exc:
            raise KeyReadFailed(f"cannot log in to the system: {exc}") from None
        why = ""
        async with conn:
            for argv in (["ssh-keygen", "-y", "-f", path], ["cat", f"{path}.pub"]):
                try:
                    result = await run(conn, argv, timeout=self.reach.ssh_timeout)
                except SshError as exc:
                    raise KeyReadFailed(f"{argv[0]} on the system: {exc}") from None
                if not result.ok:
                    why = one_line(result.stderr[:400].decode("utf-8", "replace"))
                    continue
                try:
                    return _key_from(result.stdout)
                except ValueError as exc:
                    why = str(exc)
        raise KeyReadFailed(f"{path}: {why or 'no public key'}")

    # -- acting ------------------------------------------------------------------------------

    async def reboot(self, *, initrd: bool = False) -> str:
        """Read the boot id, then reboot: ``systemctl reboot`` on the system, ``reboot`` in
        the initrd (a login as root); returns the old boot id.

        A connection dropped by the reboot itself is expected, not a failure.
        """
        timeout = self.reach.ssh_timeout
        argv = ["reboot"] if initrd else ["systemctl", "reboot"]
        if not initrd:
            self.close()  # the reboot ends it anyway
        login = self.login(initrd=initrd)
        try:
            try:
                conn = await login.open()
            except SshError as exc:
                raise RebootFailed(f"cannot log in: {exc}") from None
            try:
                old = await read_boot_id(conn, timeout)
            except SshError as exc:
                raise RebootFailed(f"cannot read the boot id: {exc}") from None
            if not old:
                raise RebootFailed("the machine reports no boot id")
            try:
                result = await run(conn, argv, timeout=timeout)
            except SshError:
                return old
            if not result.ok:
                why = one_line(result.stderr_text[:400])
                raise RebootFailed(f"{' '.join(argv)} failed: {why}")
        finally:
            login.close()
        return old


async def read_boot_id(conn: asyncssh.SSHClientConnection, timeout: float) -> str:
    """The kernel's boot id over ``conn``; "" when what came back is not one (SshError
    when the command could not run)."""
    return boot_id_in(await run(conn, BOOT_ID, timeout=timeout, max_output=256))


def _key_from(output: bytes) -> str:
    """The one public key line a command printed (bounded, validated)."""
    if len(output) > KEY_READ_LIMIT:
        raise ValueError(f"more than {KEY_READ_LIMIT} bytes instead of one public key")
    text = output.decode("utf-8", "replace").strip()
    return parse_public_key(text).line(with_comment=False)
