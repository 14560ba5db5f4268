"""Shared fixtures of the test suite."""

import pytest

from neuro_hts import cli


@pytest.fixture
def run_cli(capsys):
    """Call ``cli.main(argv)`` in-process -> (exit code, stdout, stderr).

    argparse's SystemExit counts as an exit code; progress bars are off.
    """

    def run(argv):
        try:
            code = cli.main(["--no-progress", *argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
