"""Running `gpu-rca` in-process, as the tests that read its output do."""

from __future__ import annotations

import pytest

from gpu_rca.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `gpu-rca ARGS` in this process; its standard output, after asserting it exited 0 (else its stderr)."""
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    out, err = capsys.readouterr()
    assert not caught.value.code, err
    return out
