"""The sops helper: a real age key and a real sops file that the real sops decrypts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping

from tests.lab import SopsSecrets

pytest_plugins = ["tests.lab.fixtures"]

HOST_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


def test_sops_file_decrypts_with_its_own_key_only(
    make_sops: Callable[[Mapping[str, str]], SopsSecrets],
) -> None:
    secrets = make_sops({"clawsiecats_ssh_host_ed25519_key": HOST_KEY, "luks": "hunter2"})
    text = secrets.path.read_text()
    assert "hunter2" not in text
    assert "BEGIN OPENSSH" not in text
    assert secrets.recipient.startswith("age1")
    assert secrets.decrypt("clawsiecats_ssh_host_ed25519_key") == HOST_KEY
    assert secrets.decrypt("luks") == "hunter2"
    missing = subprocess.run(
        [secrets.sops, "decrypt", "--extract", '["nope"]', str(secrets.path)],
        env=secrets.full_env(),
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    other = make_sops({"x": "y"})
    foreign = subprocess.run(
        [secrets.sops, "decrypt", str(secrets.path)],
        env={**secrets.full_env(), "SOPS_AGE_KEY_FILE": str(other.age_key_file)},
        capture_output=True,
        text=True,
    )
    assert foreign.returncode == 128
