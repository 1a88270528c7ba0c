"""Entry point of the lab shell: ``python -S shell.py HOST_DIR STAGE`` (sshd's ForceCommand)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.lab.shell_run import main

    sys.exit(main(sys.argv[1:]))
