"""``sr-pipeline stack up / status / down`` against a real Prefect server (SQLite in a temporary
PREFECT_HOME, a free port): the work pool, the ``sr-gpu`` limit and both deployments exist, the
nightly schedule is paused, a second ``up`` reuses what runs, the worker has the env file's
variables (never printed), ``down`` stops everything. User mistakes exit 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sr_core.deploy.stack import read_env_file
from sr_core.errors import InputError

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-never-printed"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli_env() -> dict[str, str]:
    """This environment without Prefect's API URL (the stack sets its own) and with a shell
    AWS_PROFILE that the env file's empty ``AWS_PROFILE=`` must remove."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "AWS_DEFAULT_REGION")}
    return {**env, "AWS_PROFILE": "from-the-shell", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def stack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "sr-pipeline"
    return subprocess.run([str(exe), "stack", *args], cwd=REPO, env=_cli_env(), text=True,
                          capture_output=True, timeout=timeout)


def api_get(api_url: str, path: str):
    try:
        with urllib.request.urlopen(f"{api_url}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_read_env_file(tmp_path):
    path = tmp_path / "a.env"
    path.write_text("# comment\n\nexport AWS_DEFAULT_REGION = eu-test-1\nAWS_PROFILE=\n"
                    f"AWS_SECRET_ACCESS_KEY='{SECRET}'\nAWS_ENDPOINT_URL=http://h:9000/?a=b\n")
    assert read_env_file(path) == {"AWS_DEFAULT_REGION": "eu-test-1", "AWS_PROFILE": None,
                                   "AWS_SECRET_ACCESS_KEY": SECRET,
                                   "AWS_ENDPOINT_URL": "http://h:9000/?a=b"}
    path.write_text(f"AWS_DEFAULT_REGION=x\nAWS_SECRET_ACCESS_KEY {SECRET}\n")
    with pytest.raises(InputError, match=r"a\.env:2: expected KEY=VALUE") as exc:
        read_env_file(path)
    assert SECRET not in str(exc.value)
    path.write_text("1BAD=x\n")
    with pytest.raises(InputError, match=r"a\.env:1:"):
        read_env_file(path)


@pytest.mark.slow
def test_user_mistakes_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text(f"AWS_DEFAULT_REGION=eu-test-1\nAWS_SECRET_ACCESS_KEY {SECRET}\n")
    port = _free_port()
    res = stack("up", "--port", str(port), "--home", str(tmp_path / "home"), "--env-file", str(bad))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("sr-pipeline: error: ") and res.stderr.count("\n") == 1
    assert "bad.env:2" in res.stderr and SECRET not in res.stderr + res.stdout
    assert not (tmp_path / "home" / "stack" / "server.pid").exists()

    res = stack("up", "--port", str(port), "--home", str(tmp_path / "home"),
                "--env-file", str(tmp_path / "missing.env"))
    assert res.returncode == 2 and "missing.env: no such file" in res.stderr, res.stderr

    with socket.socket() as busy:  # a program that is not this stack's server holds the port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = stack("up", "--port", str(busy.getsockname()[1]), "--home", str(tmp_path / "home"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and "in use" in res.stderr, res.stderr


@pytest.fixture
def home(tmp_path):
    """PREFECT_HOME of the stack; at teardown any process group still named by a PID file is
    killed (only if ``stack down`` failed to stop it)."""
    home = tmp_path / "home"
    yield home
    for pid_file in (home / "stack").glob("*.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ValueError, OSError):
            pass


@pytest.mark.slow
def test_stack_up_status_down(home, tmp_path):
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env_file = tmp_path / "stack.env"
    env_file.write_text("AWS_DEFAULT_REGION=eu-test-1\nAWS_PROFILE=\n"
                        f'export AWS_SECRET_ACCESS_KEY="{SECRET}"\n')
    up_args = ("up", "--port", str(port), "--home", str(home), "--env-file", str(env_file),
               "--timeout", "240")
    try:
        res = stack(*up_args)
        assert res.returncode == 0, res.stdout + res.stderr
        assert SECRET not in res.stdout + res.stderr
        assert f"Prefect UI: http://127.0.0.1:{port}" in res.stdout
        assert f"export PREFECT_API_URL={api_url}" in res.stdout
        assert "deployment run upscale_scene/upscale-scene" in res.stdout
        assert "AWS_DEFAULT_REGION, AWS_SECRET_ACCESS_KEY" in res.stdout
        with urllib.request.urlopen(f"{api_url}/health", timeout=10) as resp:
            assert resp.status == 200
        status, pool = api_get(api_url, "/work_pools/sr-process")
        assert status == 200 and pool["type"] == "process"
        status, limit = api_get(api_url, "/v2/concurrency_limits/sr-gpu")
        assert status == 200 and limit["limit"] == 1
        status, _ = api_get(api_url, "/deployments/name/upscale_scene/upscale-scene")
        assert status == 200
        status, nightly = api_get(api_url, "/deployments/name/upscale_archive/nightly-archive")
        assert status == 200 and [s["active"] for s in nightly["schedules"]] == [False]
        assert "nightly-archive: schedule paused" in res.stdout

        run_dir = home / "stack"
        pids = {r: int((run_dir / f"{r}.pid").read_text()) for r in ("server", "worker")}
        assert all(running(p) for p in pids.values())
        environ = dict(item.split("=", 1) for item in Path(
            f"/proc/{pids['worker']}/environ").read_text().split("\0") if "=" in item)
        assert environ["AWS_DEFAULT_REGION"] == "eu-test-1"
        assert environ["AWS_SECRET_ACCESS_KEY"] == SECRET
        assert "AWS_PROFILE" not in environ  # an empty value removes the shell's variable
        assert environ["PREFECT_API_URL"] == api_url

        again = stack(*up_args)
        assert again.returncode == 0, again.stdout + again.stderr
        assert {r: int((run_dir / f"{r}.pid").read_text()) for r in pids} == pids
        assert "server: already running" in again.stdout
        assert "worker: already running" in again.stdout
        assert "deployments: up to date" in again.stdout

        st = stack("status", "--home", str(home))
        assert st.returncode == 0, st.stdout + st.stderr
        assert f"server: healthy at http://127.0.0.1:{port} (pid {pids['server']})" in st.stdout
        assert f"worker: running (pid {pids['worker']}" in st.stdout
    finally:
        down = stack("down", "--home", str(home))
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"worker: stopped (pid {pids['worker']})" in down.stdout, down.stdout
    assert f"server: stopped (pid {pids['server']})" in down.stdout, down.stdout
    deadline = time.monotonic() + 10
    while any(running(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(running(p) for p in pids.values())
    assert not port_open(port)
    assert not list(run_dir.glob("*.pid"))
    st = stack("status", "--home", str(home))
    assert st.returncode == 3 and "server: not running" in st.stdout, st.stdout
