"""The closure difference in an update's confirmation: the real bot over the fake Bot API,
the new system read from the lab's nix, the running one from the lab host over the login."""

from __future__ import annotations

from tests.flows.updating import ATTR, confirm_update, installed, job_end
from tests.lab.generations import DEFAULT_PACKAGES
from tests.world import World


async def test_the_confirmation_shows_what_changes(world: World) -> None:
    await installed(world)
    packages = dict(DEFAULT_PACKAGES)
    packages["openssl-3.0.14"] = packages.pop("openssl-3.0.13") + 12288
    packages["foo-1.2"] = 20 * 1024
    del packages["bash-5.2p37"]
    world.lab.set_configuration(world.flake, ATTR, version="2", packages=tuple(packages.items()))
    confirmation = await confirm_update(world, world.op)
    body = confirmation.body
    assert "Its disks are not touched" in body
    assert "Closure: 3 package changes:" in body, body
    assert "openssl: 3.0.13 → 3.0.14, +12.0 KiB" in body
    assert "foo: ∅ → 1.2, +20.0 KiB" in body
    assert "bash: 5.2p37 → ∅, -20.0 KiB" in body
    assert "coreutils" not in body
    assert not world.rig.tg.documents_in(world.op)
    end = await job_end(world, world.op)
    assert "— succeeded after" in end.body, end.body


async def test_a_long_difference_arrives_whole_as_a_file(world: World) -> None:
    await installed(world)
    many = tuple((f"tool{i:03d}-1.{i}", 100) for i in range(400))
    world.lab.set_configuration(world.flake, ATTR, version="2", packages=(*DEFAULT_PACKAGES, *many))
    confirmation = await confirm_update(world, world.op)
    assert len(confirmation.body) <= 4096
    # The toplevel lists its closure: 400 more paths grow it by more than 8 KiB.
    assert "Closure: 401 package changes (400 version changes" in confirmation.body
    assert "the whole list is in the file above" in confirmation.body
    (document,) = world.rig.tg.documents_in(world.op)
    assert document.document is not None
    listed = document.document.data.decode().splitlines()
    system = [line for line in listed if line.startswith("nixos-system-clawsiecats: +")]
    assert len(system) == 1
    assert " KiB" in system[0]
    assert "→" not in system[0]
    assert [line for line in listed if line not in system] == [
        f"tool{i:03d}: ∅ → 1.{i}" for i in range(400)
    ]
    end = await job_end(world, world.op)
    assert "— succeeded after" in end.body, end.body
