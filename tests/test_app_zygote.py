"""The test servers' zygote (tests/app_zygote.py): a forked child is the process `python script args` would
be (argv, sys.path, cwd, environment, output to its log, exit status), and the tests can signal it."""

from __future__ import annotations

import os
import signal

import pytest

from tests import app_zygote
from tests.api_server import REPO_ROOT, server_env
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not app_zygote.enabled(), reason="SDWEBUI_TESTS_NO_ZYGOTE is set")

_SCRIPT = """
import os, sys, time
print("argv", sys.argv[1:])
print("path0", sys.path[0])
print("cwd", os.getcwd())
print("test", os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0])
print("threads", os.environ.get("OMP_NUM_THREADS"))
print("torch already imported", "torch" in sys.modules, flush=True)
if sys.argv[1] == "wait":
    time.sleep(600)
sys.exit(int(sys.argv[2]))
"""


def _start(tmp_path, *args):
    script = tmp_path / "probe" / "probe.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(_SCRIPT)
    log_path = tmp_path / "probe.log"
    return app_zygote.start_app(script, list(args), server_env(), REPO_ROOT, log_path), script, log_path


def test_a_forked_script_runs_with_its_argv_path_cwd_env_and_exit_status(tmp_path):
    process, script, log_path = _start(tmp_path, "exit", "3")
    assert isinstance(process, app_zygote.ForkedProcess)
    assert process.wait(60) == 3
    lines = log_path.read_text().splitlines()
    assert lines[:6] == [
        "argv ['exit', '3']",
        f"path0 {script.parent}",
        f"cwd {REPO_ROOT}",
        f"test {os.environ['PYTEST_CURRENT_TEST'].split(' ')[0]}",
        "threads 1",
        "torch already imported True",  # the point: imported once, in the zygote
    ]
    assert process.pid != os.getpid() and process.poll() == 3


def test_a_forked_script_can_be_killed_and_reports_the_signal(tmp_path):
    process, _, log_path = _start(tmp_path, "wait", "0")
    wait_until(lambda: "torch already imported" in log_path.read_text(), "the script's output", timeout=60)
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL
    process.kill()  # reaped: a no-op, never a signal to a reused pid
