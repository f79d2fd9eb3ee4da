"""`import accord` needs NumPy alone; heavy frameworks load only where used."""

from __future__ import annotations

import subprocess
import sys


def test_import_accord_loads_no_framework() -> None:
    code = (
        "import sys, accord, accord.tensors, accord.tensors.digest, accord.messages; "
        "heavy = ('torch', 'sklearn', 'grpc', 'cryptography', 'tensorflow', 'safetensors', 'blake3'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fx_console_script_is_installed() -> None:
    done = subprocess.run([sys.executable, "-m", "accord.cli.main", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "fx" in done.stdout
