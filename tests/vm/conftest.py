"""Fixtures of the VM lab: KVM checked before anything runs, images built once (cached),
guests booted per test on their own loopback address and stopped by pid at teardown."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fake_telegram import FakeTelegram
from tests.vm import kvm
from tests.vm.control import Machine
from tests.vm.flavour_scripted import SCRIPTED
from tests.vm.guest import Image, cache_dir, image
from tests.vm.qemu import ACCEL_ENV, Guest
from tests.vm.world import VmWorld

SKIP_ENV = "DEPLOYBOT_TEST_VM"
TEST_TIMEOUT = 1800
_addresses = itertools.count(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    if not ours:
        return
    for item in ours:
        # A guest under TCG (see kvm.py) boots in minutes: the suite's 300 s is too short.
        item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))
    if os.environ.get(SKIP_ENV) == "skip":
        mark = pytest.mark.skip(reason=f"{SKIP_ENV}=skip: the VM lab was skipped on request")
        for item in ours:
            item.add_marker(mark)
        return
    problem = kvm.problem()
    if problem is not None:
        pytest.exit(
            f"The VM lab (tests/vm) cannot run here: {problem}.\n"
            f"It needs /dev/kvm able to create a VM, and qemu-system-x86, qemu-utils, "
            f"mmdebstrap (make vm-deps). Set {SKIP_ENV}=skip to leave it out explicitly.",
            returncode=1,
        )


@pytest.fixture(scope="session")
def scripted_image() -> Image:
    """The scripted flavour's image (built on first use, then cached)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    built = image(SCRIPTED)
    kvm.choose_accelerator(built.kernel, cache_dir())
    return built


BootGuest = Callable[[Image], Awaitable[Machine]]


async def booted(boot: BootGuest, image: Image, timeout: float = 600.0) -> Machine:
    """A guest of a scripted image, unlocked by hand and up (running or degraded)."""
    machine = await boot(image)
    await machine.wait_initrd(timeout)
    await machine.unlock_by_hand()
    await machine.wait_system(timeout)
    await machine.wait_running(timeout)
    return machine


@pytest_asyncio.fixture
async def boot(tmp_path: Path) -> AsyncIterator[BootGuest]:
    """Start guests of an image (each on its own loopback address); all are stopped by
    pid at teardown, and a failed test shows their consoles."""
    started: list[Guest] = []

    async def start(built: Image) -> Machine:
        n = next(_addresses)
        guest = Guest(
            name=f"{built.flavour}-{n}",
            kernel=built.kernel,
            initrd=built.initrd,
            cmdline=built.cmdline,
            base_disk=built.disk,
            dir=tmp_path / f"guest-{n}",
            address=f"127.0.{(os.getpid() % 200) + 20}.{n % 250 + 2}",
        )
        started.append(guest)
        guest.start()
        return Machine(guest, built)

    try:
        yield start
    finally:
        for guest in started:
            guest.stop()
        if sys.exc_info()[0] is not None:
            for guest in started:
                print(f"--- console of {guest.name}:\n{guest.console()[-4000:]}")


@pytest_asyncio.fixture
async def vm_world(fake_telegram: FakeTelegram, tmp_path: Path) -> AsyncIterator[VmWorld]:
    """The bot's side: the fake Bot API, an inventory of guests, a ``deploybot run``
    process (started by the test), stopped at teardown with its output shown on failure."""
    world = VmWorld(fake_telegram, tmp_path)
    try:
        yield world
    finally:
        await world.stop()
        if sys.exc_info()[0] is not None and world.output.exists():
            print(world.output.read_text(errors="replace")[-6000:])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    accel = os.environ.get(ACCEL_ENV)
    if accel == "tcg":
        terminalreporter.write_line(
            "VM lab: guests ran under qemu's TCG: /dev/kvm here creates VMs but did not boot "
            f"a kernel within {kvm.PROBE_SECONDS:.0f}s (tests/vm/kvm.py); "
            f"{ACCEL_ENV}=kvm forces KVM."
        )
    elif accel == "kvm":
        terminalreporter.write_line("VM lab: guests ran under KVM.")
