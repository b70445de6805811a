"""What the `awq` extra needs to install: gptqmodel imports `pcre`, and pypcre, its provider, is a source archive
with a C extension, so a slim machine fails at `pip install ".[awq]"` or at `import gptqmodel`. `doctor` says what
the build needs here, and a failing import becomes one line naming the missing piece."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from internvl_cli.hardware.awq import awq_install_line, missing_module
from internvl_cli.hardware.machine import pcre2_headers_found

REPO = Path(__file__).resolve().parent.parent


def test_a_gptqmodel_that_cannot_import_pcre_is_one_line_naming_what_pypcre_needs():
    """pcre made unimportable (as on a machine where pypcre never built); the CLI as a user runs it."""
    blocked = ("import sys; sys.modules['pcre'] = None; sys.argv = ['internvl', 'doctor', '--warm']; "
               "from internvl_cli.cli import main; main()")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 6, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "gptqmodel could not be imported: No module named 'pcre'" in done.stderr
    assert "a C compiler, Python.h and libpcre2-dev" in done.stderr
    assert "apt install build-essential python3-dev libpcre2-dev" in done.stderr


def test_the_missing_module_is_found_through_the_chain():
    try:
        try:
            raise ModuleNotFoundError("No module named 'pcre_ext_c'", name="pcre_ext_c")
        except ModuleNotFoundError as inner:
            raise RuntimeError("gptqmodel failed to set up its logger") from inner
    except RuntimeError as outer:
        assert missing_module(outer) == "pcre_ext_c"
    assert missing_module(ValueError("no")) is None


@pytest.mark.parametrize("gptqmodel, pcre, cc, python_h, pcre2_h, says", [
    ("7.6.0", "0.6.4", False, False, False, "ok: gptqmodel 7.6.0, pypcre 0.6.4"),
    (None, None, True, True, True, 'not installed; pip install ".[awq]" builds pypcre from source'),
    (None, None, True, True, True, "all found here"),
    (None, None, False, True, False, "missing here: a C compiler, libpcre2-dev (pcre2.h) (apt install "
                                     "build-essential python3-dev libpcre2-dev)"),
    ("7.6.0", None, True, False, True, "gptqmodel 7.6.0 is installed but pypcre (its pcre module) is not"),
    ("7.6.0", None, True, False, True, "missing here: Python.h"),
])
def test_doctors_awq_install_line(gptqmodel, pcre, cc, python_h, pcre2_h, says):
    assert says in awq_install_line(gptqmodel, pcre, cc, python_h, pcre2_h)


def test_pcre2_headers_are_looked_for_in_the_include_dirs(tmp_path):
    assert not pcre2_headers_found([tmp_path])
    (tmp_path / "pcre2.h").write_text("/* pcre2 */\n")
    assert pcre2_headers_found([tmp_path / "elsewhere", tmp_path])


def test_doctor_reports_the_awq_install(cli):
    code, out, err = cli("doctor", "--json")
    assert code == 0, err
    assert json.loads(out)["awq_install"].startswith("ok: gptqmodel 7.6")  # this machine has the extra
