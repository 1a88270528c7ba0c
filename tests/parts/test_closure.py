"""The closure difference: Nix's grouping and lines on hand-made closures, and the strict
reading of what a machine lists."""

from __future__ import annotations

import pytest

from bot.flows.update.closure import (
    ClosureError,
    diff,
    package_of,
    parse_listing,
    summary,
)

H = "/nix/store/" + "a" * 32
K = "/nix/store/" + "b" * 32


def lines(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return [c.line() for c in diff(before, after)]


def test_names_split_as_nix_splits_them() -> None:
    assert package_of(f"{H}-openssl-3.0.14") == ("openssl", "3.0.14")
    assert package_of(f"{H}-openssl-3.0.14-bin") == ("openssl", "3.0.14")
    assert package_of(f"{H}-linux-6.12.33-modules") == ("linux", "6.12.33")
    assert package_of(f"{H}-nixos-system-web-25.05.1") == ("nixos-system-web", "25.05.1")
    assert package_of(f"{H}-etc") == ("etc", "")
    assert package_of(f"{H}-unit-script-foo-start") == ("unit-script-foo", "")
    assert package_of(f"{H}-glibc-2.40-66-lib32") == ("glibc", "2.40-66")


def test_versions_and_sizes_as_diff_closures_prints_them() -> None:
    before = {f"{H}-openssl-3.0.13": 40960, f"{H}-bash-5.2": 100, f"{H}-gone-1.0": 2048}
    after = {
        f"{K}-openssl-3.0.14": 40960 + 12288,
        f"{K}-bash-5.2": 100 + 8191,  # under 8 KiB: not shown
        f"{K}-foo-1.2": 30 * 1024 + 512,
        f"{K}-etc": 9000,
    }
    assert lines(before, after) == [
        "etc: ∅ → ε, +8.8 KiB",
        "foo: ∅ → 1.2, +30.5 KiB",
        "gone: 1.0 → ∅",
        "openssl: 3.0.13 → 3.0.14, +12.0 KiB",
    ]


def test_a_size_change_alone_and_several_versions() -> None:
    before = {f"{H}-zlib-1.3": 10000, f"{H}-perl-5.38": 1, f"{H}-perl-5.36": 1}
    after = {f"{K}-zlib-1.3": 10000 - 9 * 1024, f"{K}-perl-5.40": 1, f"{K}-perl-5.36": 1}
    assert lines(before, after) == ["perl: 5.38 → 5.40", "zlib: -9.0 KiB"]
    assert lines(before, before) == []


def test_the_listing_is_read_strictly() -> None:
    good = f"{H}-openssl-3.0.14\t      53248\n{K}-etc   \t        120\n"
    assert parse_listing(good) == {f"{H}-openssl-3.0.14": 53248, f"{K}-etc": 120}
    bad = [
        f"{H}-openssl-3.0.14\t      53248 extra",
        f"/nix/store/{'e' * 32}-x\t1",  # no e in Nix's base32
        f"{H}-x\t-5",
        f"{H}-x",
        f"{H}-\x1b[31mred\t1",
        f"{H}-x.drv\t1",
        "warning: something",
        "",
    ]
    for line in bad:
        with pytest.raises(ClosureError):
            parse_listing(good + line if line else "")
    with pytest.raises(ClosureError, match="more than 2"):
        parse_listing(good + f"/nix/store/{'c' * 32}-y\t1\n", max_paths=2)
    with pytest.raises(ClosureError) as refused:
        parse_listing(f"{H}-x\x1b]0;title\x07\t1")
    assert "\x1b" not in str(refused.value)


def test_a_long_list_is_summarised_within_the_room() -> None:
    before = {f"{H}-pkg{i:04d}-1.0": 1 for i in range(300)}
    after = {f"{K}-pkg{i:04d}-1.1": 1 for i in range(300)}
    changes = diff(before, after)
    text, to_file = summary(changes, 1000)
    assert to_file
    assert len(text) <= 1000
    assert "300 package changes" in text
    assert "300 version changes" in text
    short, to_file = summary(changes[:3], 1000)
    assert not to_file
    assert short.splitlines()[1:] == [
        "pkg0000: 1.0 → 1.1",
        "pkg0001: 1.0 → 1.1",
        "pkg0002: 1.0 → 1.1",
    ]
