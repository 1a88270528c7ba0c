"""bot.secret: a secret must not leak through repr, format, pickle, copy or logs."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.secret import MASK, Redactor, Secret, redact

VALUE = "hunter2-passphrase"


def test_never_printed() -> None:
    secret = Secret(VALUE)
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        "%s" % secret,  # noqa: UP031
    ):
        assert text == "Secret(***)"
    assert VALUE not in repr([secret, {"k": secret}])
    assert not hasattr(secret, "__dict__")


def test_not_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("passphrase is %s", Secret(VALUE))
    assert VALUE not in caplog.text
    assert "Secret(***)" in caplog.text


def test_not_picklable_or_copyable() -> None:
    secret = Secret(VALUE)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(secret, protocol=protocol)
    with pytest.raises(TypeError):
        copy.copy(secret)
    with pytest.raises(TypeError):
        copy.deepcopy(secret)


def test_reveal_and_matches() -> None:
    secret = Secret(VALUE)
    assert secret.reveal() == VALUE.encode()
    assert secret.reveal_str() == VALUE
    assert secret.matches(VALUE)
    assert secret.matches(VALUE.encode())
    assert secret.matches(Secret(VALUE))
    assert not secret.matches("hunter3-passphrase")
    assert not secret.matches("")
    assert Secret(b"\xff\x00").reveal() == b"\xff\x00"
    assert Secret(bytearray(b"ab")).reveal() == b"ab"
    assert len(secret) == len(VALUE)


def test_equality_is_identity_only() -> None:
    a, b = Secret(VALUE), Secret(VALUE)
    assert a == a
    assert a != b
    assert a != VALUE
    assert len({a, b}) == 2


def test_wipe_zeroes_the_buffer() -> None:
    secret = Secret(VALUE)
    buf = secret._buf
    secret.wipe()
    assert secret.wiped
    assert not secret
    assert buf == bytearray()
    with pytest.raises(ValueError, match="wiped"):
        secret.reveal()
    secret.wipe()


def test_context_manager_wipes() -> None:
    with Secret(VALUE) as secret:
        assert secret.reveal_str() == VALUE
        buf = secret._buf
        view = bytes(buf)
    assert secret.wiped
    assert view == VALUE.encode()
    assert buf == bytearray()


def test_redact_values_and_fragments() -> None:
    key = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ\nshort\n-----END KEY-----\n"
    text = f"pass={VALUE} again {VALUE}; line AAAAB3NzaC1yc2EAAAADAQABAAABAQ alone; short"
    out = redact(text, [Secret(VALUE), Secret(key)])
    assert VALUE not in out
    assert "AAAAB3NzaC1yc2EAAAADAQABAAABAQ" not in out
    assert out.count(MASK) == 3
    assert out.endswith("short")  # fragments under 8 characters are not hunted
    assert redact("nothing here", [Secret(VALUE), b"", ""]) == "nothing here"
    wiped = Secret(VALUE)
    wiped.wipe()
    assert redact(VALUE, [wiped]) == VALUE


def test_redactor_reuses_needles() -> None:
    scrub = Redactor([Secret("abc12345"), "zz-top-secret"])
    assert scrub("x abc12345 zz-top-secret y") == "x *** *** y"
    assert "abc" not in repr(scrub)


@given(secret=st.text(min_size=1, max_size=40), before=st.text(), after=st.text())
def test_redact_property(secret: str, before: str, after: str) -> None:
    out = redact(before + secret + after, [Secret(secret)])
    # The mask itself may be made of the secret's characters ("*"): look past it.
    assert secret.strip() == "" or secret not in out.replace(MASK, "")
