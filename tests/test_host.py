"""``pywatt run`` as a development host (issue 12; issue 11 defects 2, 3, 14, 15).

Every test starts real child processes: ``pywatt run`` itself, Python modules of both kinds,
a plain script speaking the wire (run through its interpreter as a command line after
``--``), and a C module compiled with gcc where one is present.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_e2e_asyncio import READY, ROOT, Running

HELLO = str(ROOT / "examples" / "hello.py")

# A module with no SDK: reads the init, announces the endpoints given as JSON in argv[1],
# answers every request with what it knows (its PYWATT_MODULE_ID, the init it got, the uri).
# /crash exits 3; /wedge stops reading stdin for good (it only sleeps).
RAW_MODULE = r"""
import json, os, sys, time
endpoints = json.loads(sys.argv[1]) if len(sys.argv) > 1 else [["GET", "/whoami"]]
print("raw module starting", file=sys.stderr, flush=True)
init = json.loads(sys.stdin.readline())
out = sys.stdout
eps = [{"path": p, "methods": [m], "auth": None} for m, p in endpoints]
out.write(json.dumps({"op": "announce", "listen": "127.0.0.1:0", "endpoints": eps}) + "\n")
out.flush()
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("op") == "shutdown":
        break
    if msg.get("op") != "http_request":
        continue
    if msg["uri"] == "/crash":
        os._exit(3)
    if msg["uri"] == "/wedge":
        time.sleep(3600)
    body = json.dumps({
        "env_module_id": os.environ.get("PYWATT_MODULE_ID"),
        "init_module_id": init["module_id"],
        "init_extensions": init.get("pywatt_extensions"),
        "method": msg["method"],
        "uri": msg["uri"],
    }).encode()
    resp = {"op": "http_response", "request_id": msg["request_id"], "status_code": 200,
            "headers": {"content-type": "application/json"}, "body": list(body)}
    out.write(json.dumps(resp) + "\n")
    out.flush()
"""


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "raw.py"
    path.write_text(RAW_MODULE)
    return path


def pywatt(*args: str | bytes, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pywatt_asyncio._cli", *args],
        capture_output=True,
        timeout=timeout,
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
    )


class HostRun(Running):
    """``pywatt run --http 127.0.0.1:0 ARGS`` (ARGS may hold targets, options and ``--``)."""

    def __init__(self, *args: str, ready: bool = True, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pywatt_asyncio._cli", "run", "--http", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
            env={**os.environ, **(env or {})},
        )
        self.lines = []
        self._url = None
        self._seen = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()
        if ready:
            self.url = self.wait_for(READY).group(1)


def run_host(*args: str, ready: bool = True, env: dict[str, str] | None = None) -> HostRun:
    return HostRun(*args, ready=ready, env=env)


# ------------------------------------------------------------------ targets (point 1, 3)


def test_command_line_module_gets_module_id_init_and_prefixed_stderr(raw: Path) -> None:
    run = run_host("--", sys.executable, str(raw))
    try:
        r = httpx.get(run.url + "/whoami", timeout=10)
        assert r.status_code == 200, run.stderr
        got = r.json()
        assert got["env_module_id"] == "raw" and got["init_module_id"] == "raw"
        assert got["init_extensions"] == ["base64_bodies", "heartbeat_ack", "http_response_op"]
        assert "[raw] raw module starting" in run.stderr
    finally:
        assert run.stop() == 0, run.stderr
    assert "raw: module stopped (status 0)" in run.stderr


def test_extensions_none_sends_the_reference_init(raw: Path) -> None:
    run = run_host("--extensions", "none", "--module-id", "plain", "--", sys.executable, str(raw))
    try:
        got = httpx.get(run.url + "/whoami", timeout=10).json()
        assert got["init_extensions"] is None  # no pywatt_extensions key at all
        assert got["env_module_id"] == "plain" and got["init_module_id"] == "plain"
    finally:
        assert run.stop() == 0, run.stderr


def test_unknown_extension_is_a_usage_error() -> None:
    proc = pywatt("run", "x.py", "--extensions", "warp_drive")
    assert proc.returncode == 2 and b"warp_drive" in proc.stderr


C_MODULE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    char *line = NULL; size_t cap = 0;
    if (getline(&line, &cap, stdin) < 0) return 1;           /* the init */
    fputs("c module up\n", stderr);
    puts("{\"op\":\"announce\",\"listen\":\"127.0.0.1:0\",\"endpoints\":"
         "[{\"path\":\"/c\",\"methods\":[\"GET\"],\"auth\":null}]}");
    fflush(stdout);
    while (getline(&line, &cap, stdin) >= 0) {
        if (strstr(line, "\"op\":\"shutdown\"")) break;
        char *rid = strstr(line, "\"request_id\":\"");
        if (!strstr(line, "\"op\":\"http_request\"") || !rid) continue;
        rid += 14;
        char *end = strchr(rid, '"');
        if (!end) continue;
        *end = 0;
        printf("{\"op\":\"http_response\",\"request_id\":\"%s\",\"status_code\":200,"
               "\"headers\":{},\"body\":[104,105]}\n", rid);
        fflush(stdout);
    }
    free(line);
    return 0;
}
"""


def test_compiled_c_module(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) on this machine")
    src = tmp_path / "cmod.c"
    src.write_text(C_MODULE)
    exe = tmp_path / "cmod"
    subprocess.run([cc, "-O1", "-o", str(exe), str(src)], check=True, timeout=60)
    run = run_host("--", str(exe))
    try:
        r = httpx.get(run.url + "/c", timeout=10)
        assert (r.status_code, r.text) == (200, "hi")
        assert "[cmod] c module up" in run.stderr
    finally:
        assert run.stop() == 0, run.stderr


# ------------------------------------------------------------ several modules (point 2)


def test_two_modules_routed_by_their_endpoints(tmp_path: Path, raw: Path) -> None:
    config = tmp_path / "pywatt.toml"
    a = json.dumps([["GET", "/a"], ["GET", "/items/{id}"], ["GET", "/{rest:path}"]])
    b = json.dumps([["GET", "/b"], ["POST", "/items/{item_id}"], ["GET", "/b/:name"]])
    config.write_text(
        textwrap.dedent(
            f"""
            [[module]]
            id = "alpha"
            command = [{json.dumps(sys.executable)}, "raw.py", {json.dumps(a)}]

            [[module]]
            id = "beta"
            command = [{json.dumps(sys.executable)}, "raw.py", {json.dumps(b)}]
            env = {{ GREETING = "hi" }}
            """
        )
    )
    run = run_host("--config", str(config), HELLO)
    try:

        def who(method: str, path: str) -> str:
            r = httpx.request(method, run.url + path, timeout=10)
            assert r.status_code == 200, (path, r.status_code, run.stderr)
            got = r.json()
            return str(got.get("env_module_id") or got.get("message"))

        assert who("GET", "/a") == "alpha"
        assert who("GET", "/b") == "beta"
        assert who("GET", "/b/ada") == "beta"
        assert who("GET", "/items/7") == "alpha"
        assert who("POST", "/items/7") == "beta"
        assert who("GET", "/hello") == "Hello from PyWatt!"  # the Python module, literal wins
        assert who("GET", "/anything/else") == "alpha"  # the rest-of-path endpoint
        assert who("DELETE", "/b") == "beta"  # the path's owner answers (405 from a real one)
        assert "[alpha] raw module starting" in run.stderr
        assert "[beta] raw module starting" in run.stderr
    finally:
        assert run.stop() == 0, run.stderr


def test_unknown_path_is_404_from_the_host(raw: Path) -> None:
    run = run_host(HELLO, "--", sys.executable, str(raw))
    try:
        assert httpx.get(run.url + "/whoami", timeout=10).json()["env_module_id"] == "raw"
        r = httpx.get(run.url + "/nowhere", timeout=10)
        assert r.status_code == 404 and r.json() == {"error": "no module serves this path"}
    finally:
        assert run.stop() == 0, run.stderr


def test_two_modules_announcing_the_same_route_is_a_start_up_error(tmp_path: Path) -> None:
    other = tmp_path / "other.py"
    other.write_text(
        "from pywatt_asyncio import Module\napp = Module()\n"
        "@app.get('/hello/{who}')\nasync def h(request):\n    return 'x'\n"
    )
    proc = pywatt("run", "--http", "127.0.0.1:0", HELLO, str(other))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert re.search(r"GET /hello/\{\w+\} is announced by both module '(hello|other)'", err), err
    assert "'hello'" in err and "'other'" in err


def test_duplicate_module_ids_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "hello.py").write_text("")
    proc = pywatt("run", HELLO, str(tmp_path / "x" / "hello.py"))
    assert proc.returncode == 1 and b"two modules have the id 'hello'" in proc.stderr


# ---------------------------------------------------- configured ASGI module (point 1, 3)

ASGI_NOTES = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from pywatt_asyncio import asgi_module

rotations = []

async def db(request):
    return JSONResponse({"db": await module.secret("DB"), "rotations": rotations})

app = Starlette(routes=[Route("/db", db)])
module = asgi_module(app, secrets=["DB"])

@module.on_rotation
def rotated(keys):
    rotations.append(sorted(keys))
"""


def test_configured_asgi_module_with_secrets_and_rotation(tmp_path: Path) -> None:
    (tmp_path / "notes.py").write_text(ASGI_NOTES)
    secrets = tmp_path / "secrets.env"
    secrets.write_text("DB=v1\n")
    run = run_host(f"{tmp_path / 'notes.py'}:module", "--secrets-file", str(secrets))
    try:
        r = httpx.get(run.url + "/db", timeout=10)
        assert r.json() == {"db": "v1", "rotations": []}, run.stderr
        secrets.write_text("DB=v2\n")
        run.proc.send_signal(signal.SIGHUP)
        run.wait_for(re.compile(r"rotation-1 acknowledged: success"))
        assert httpx.get(run.url + "/db", timeout=10).json() == {"db": "v2", "rotations": [["DB"]]}
    finally:
        assert run.stop() == 0, run.stderr


# ---------------------------------------------------------------- restart (point 6)


def test_restart_on_failure_brings_a_crashed_module_back(raw: Path) -> None:
    run = run_host("--restart", "on-failure", "--", sys.executable, str(raw))
    try:
        assert httpx.get(run.url + "/crash", timeout=10).status_code == 502
        # held while the module restarts, then served by the new process (never refused)
        r = httpx.get(run.url + "/whoami", timeout=20)
        assert r.status_code == 200, run.stderr
        run.wait_for(re.compile(r"raw: module exited unexpectedly with status 3"))
        run.wait_for(re.compile(r"raw: restarting in [\d.]+ s \(failure 1\)"))
        run.wait_for(re.compile(r"raw: module restarted"))
        assert run.stderr.count("[raw] raw module starting") == 2
    finally:
        assert run.stop() == 0, run.stderr


def test_crash_without_restart_exits_1(raw: Path) -> None:
    run = run_host("--", sys.executable, str(raw))
    assert httpx.get(run.url + "/crash", timeout=10).status_code == 502
    assert run.proc.wait(15) == 1
    assert "--restart on-failure" in run.stderr


# ---------------------------------------------------------------- reload (point 5)

RELOADABLE = """
import asyncio
from pywatt_asyncio import Module
app = Module()

@app.get("/v")
async def v(request):
    await asyncio.sleep(0.05)
    return {"version": VERSION}

VERSION = 1
"""


def test_reload_switches_without_refusing_requests(tmp_path: Path) -> None:
    mod = tmp_path / "svc.py"
    mod.write_text(RELOADABLE)
    side = tmp_path / "side.py"  # a module beside it: an edit of svc.py does not reload it
    side.write_text(RELOADABLE.replace('"/v"', '"/side"'))
    run = run_host(str(mod), str(side), "--reload", "--shutdown-grace", "2")
    statuses: list[int] = []
    versions: set[int] = set()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=run.url, timeout=15) as c:
            while not stop.is_set():
                r = c.get("/v")
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["version"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        mod.write_text(RELOADABLE.replace("VERSION = 1", "VERSION = 2"))
        run.wait_for(re.compile(r"svc: reloaded"), timeout=20)
        deadline = time.monotonic() + 10
        while 2 not in versions and time.monotonic() < deadline:
            time.sleep(0.05)
        # a broken edit: reported with the user's traceback, the old process keeps serving
        mod.write_text(RELOADABLE.replace("VERSION = 1", "VERSION = {}['missing']"))
        run.wait_for(re.compile(r"reload failed"), timeout=20)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    try:
        assert versions == {1, 2}, run.stderr
        assert len(statuses) > 20 and set(statuses) == {200}, (set(statuses), run.stderr)
        assert re.search(r"\[svc\] .*svc\.py\", line \d+", run.stderr)  # user's frame shown
        assert "KeyError: 'missing'" in run.stderr
        assert httpx.get(run.url + "/v", timeout=10).json() == {"version": 2}
        assert httpx.get(run.url + "/side", timeout=10).json() == {"version": 1}
        assert "side: reloaded" not in run.stderr and "side.py changed" not in run.stderr
    finally:
        assert run.stop() == 0, run.stderr


# ------------------------------------------------------- exit status (11.14, point 6)

STUBBORN = r"""
import json, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.readline()
sys.stdout.write('{"op":"announce","listen":"127.0.0.1:0","endpoints":[]}\n')
sys.stdout.flush()
for line in sys.stdin:
    pass  # ignores shutdown
time.sleep(3600)
"""


def test_killed_module_makes_exit_status_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "stubborn.py"
    path.write_text(STUBBORN)
    run = run_host("--shutdown-grace", "0.5", "--", sys.executable, str(path))
    code = run.stop()
    assert code == 1, run.stderr
    assert "stubborn: module was killed after the 0.5 s grace period (status -9)" in run.stderr


# ---------------------------------------------- request deadline (11.2) and failures (11.3)


def test_deadline_fires_while_the_module_has_stopped_reading(raw: Path) -> None:
    run = run_host(
        "--request-timeout", "1", "--shutdown-grace", "0.5", "--", sys.executable, str(raw)
    )
    try:
        with httpx.Client(base_url=run.url, timeout=10) as c:
            assert c.get("/wedge").status_code == 504  # the module stops reading for good
        results: list[tuple[int, float]] = []

        def post() -> None:
            t0 = time.monotonic()
            r = httpx.post(run.url + "/echo", content=b"\xff" * 300_000, timeout=20)
            results.append((r.status_code, time.monotonic() - t0))

        threads = [threading.Thread(target=post) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [s for s, _ in results] == [504] * 12, run.stderr
        assert max(d for _, d in results) < 4.0, results
    finally:
        run.stop()


def test_secret_that_is_not_utf8_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pywatt_asyncio._cli", "run", "x.py", "--secret", b"K=\xffabc"],
        capture_output=True,
        timeout=30,
        cwd=str(ROOT),
    )
    assert proc.returncode == 2
    assert b"the value of secret 'K' is not valid UTF-8" in proc.stderr
    assert b"abc" not in proc.stderr  # the value is never echoed


async def test_internal_failure_is_logged_answers_502_and_is_reported(
    raw: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pywatt_asyncio import ModuleProcess

    # A value that cannot be encoded (what --secret validation now refuses) makes the
    # orchestrator's side fail while answering get_secret: it must not die silently.
    mod = ModuleProcess(
        [sys.executable, "-c", ASK_SECRET], secrets={"K": "\udcffabc"}, heartbeat_interval=None
    )
    await mod.start()
    resp = await mod.request("GET", "/slow", {}, None)
    assert resp.status_code == 502
    assert await mod.wait() != 0
    assert mod.failure is not None and mod.killed
    assert "internal error in the link to module" in caplog.text
    assert (await mod.request("GET", "/slow", {}, None)).status_code == 502


ASK_SECRET = r"""
import sys
sys.stdin.readline()
sys.stdout.write('{"op":"announce","listen":"127.0.0.1:0","endpoints":[]}\n')
sys.stdout.flush()
sys.stdin.readline()  # the request: ask for the secret and wait
sys.stdout.write('{"op":"get_secret","name":"K"}\n')
sys.stdout.flush()
for line in sys.stdin:
    pass
"""


# ------------------------------------------------------------------ secrets (11.15)


def test_secret_from_environment_and_secrets_file(tmp_path: Path) -> None:
    target = tmp_path / "sec.py"
    target.write_text(
        "from pywatt_asyncio import Module\napp = Module()\n"
        "@app.get('/s/{name}')\nasync def s(request):\n"
        "    return {'v': await app.secret(request.path_params['name'])}\n"
    )
    sfile = tmp_path / "s.env"
    sfile.write_text("FROM_FILE=f1\n")
    run = run_host(
        str(target),
        "--secret",
        "FROM_ENV",
        "--secrets-file",
        str(sfile),
        env={"FROM_ENV": "e1"},
    )
    try:
        assert httpx.get(run.url + "/s/FROM_ENV", timeout=10).json() == {"v": "e1"}
        assert httpx.get(run.url + "/s/FROM_FILE", timeout=10).json() == {"v": "f1"}
    finally:
        assert run.stop() == 0, run.stderr
    missing = pywatt("run", str(target), "--secret", "PYWATT_SURELY_UNSET_VAR")
    assert missing.returncode == 2
    assert b"no environment variable PYWATT_SURELY_UNSET_VAR is set" in missing.stderr


def test_help_documents_options_sighup_and_the_inline_secret_risk() -> None:
    out = pywatt("run", "--help").stdout.decode()
    for option in (
        "--http",
        "--config",
        "--module-id",
        "--secret",
        "--secrets-file",
        "--env-file",
        "--restart",
        "--reload",
        "--reload-dir",
        "--extensions",
        "--request-timeout",
        "--announce-timeout",
        "--heartbeat-interval",
        "--shutdown-grace",
        "--no-access-log",
        "--forwarded-allow-ips",
        "--max-header-bytes",
        "--read-timeout",
        "--keepalive-timeout",
        "--max-connections",
        "--log-level",
        "--port-delay",
        "--port-refuse",
    ):
        assert option in out, option
    assert "SIGHUP" in out and "rotation" in out
    assert "visible to other local users" in " ".join(out.split())


def test_version() -> None:
    proc = pywatt("--version")
    assert proc.returncode == 0 and re.match(rb"pywatt \d", proc.stdout)


# ------------------------------------------------------------------ messages (point 7)


def test_import_error_shows_the_users_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken_mod.py"
    bad.write_text("x = 1\n\ndef f():\n    return {}['missing']\n\nf()\n")
    proc = pywatt("run", "--http", "127.0.0.1:0", str(bad))
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert re.search(r'broken_mod\.py", line 6', err) and re.search(r"line 4, in f", err), err
    assert "KeyError: 'missing'" in err
    assert "_apprunner.py" not in err and "runpy" not in err


def test_no_app_found_lists_the_candidates(tmp_path: Path) -> None:
    path = tmp_path / "many.py"
    path.write_text(
        "from pywatt_asyncio import Module\nfrom pywatt_sync import Module as SyncModule\n"
        "first = Module()\nsecond = SyncModule()\n"
    )
    proc = pywatt("run", "--http", "127.0.0.1:0", str(path))
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "no 'app' found" in err
    assert re.search(r"first \(pywatt_asyncio\.\S*Module\)", err), err
    assert re.search(r"second \(pywatt_sync\.\S*Module\)", err), err


@pytest.mark.parametrize("example", ["hello.py", "blocking.py"])
def test_module_started_on_a_terminal_says_how_to_run_it(example: str) -> None:
    import pty

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / example)],
            stdin=secondary,
            capture_output=True,
            timeout=30,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        f"this is a PyWatt module, run it with `pywatt run {ROOT / 'examples' / example}`"
    ]


@pytest.mark.parametrize("example", ["hello.py", "blocking.py"])
def test_first_line_not_an_init_says_what_was_expected(example: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)],
        input=b"hello there\n",
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert b"the first line on stdin must be the orchestrator's init" in proc.stderr
    assert b"pywatt run FILE" in proc.stderr


ROTATION_FAILS = """
import sys
from {driver} import Module
app = Module()

@app.on_rotation
def rotated(keys):
    raise ValueError("cannot reconnect with password hunter2")

app.run()
"""


@pytest.mark.parametrize("driver", ["pywatt_asyncio", "pywatt_sync"])
def test_rotation_ack_does_not_carry_the_exception_text(tmp_path: Path, driver: str) -> None:
    script = tmp_path / "rot.py"
    script.write_text(ROTATION_FAILS.format(driver=driver))
    init = (
        b'{"orchestrator_api":"http://127.0.0.1:1","module_id":"t","env":{},'
        b'"listen":"127.0.0.1:0","pywatt_extensions":["http_response_op"]}\n'
    )
    rotated = b'{"op":"rotated","keys":["DB"],"rotation_id":"rot-1"}\n'
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(init + rotated)
    proc.stdin.flush()
    lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    proc.stdin.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(30) == 0
    ack = lines[1]
    assert ack["op"] == "rotation_ack" and ack["status"] == "error"
    assert "hunter2" not in json.dumps(ack)
    assert "ValueError" in ack["message"]
    assert b"hunter2" in err  # the detail is in the module's own log


async def test_module_process_answers_by_the_deadline_when_the_pipe_is_full(raw: Path) -> None:
    import asyncio

    from pywatt_asyncio import ModuleProcess

    mod = ModuleProcess(
        [sys.executable, str(raw)], request_timeout=1.0, shutdown_grace=0.5, heartbeat_interval=None
    )
    await mod.start()
    try:
        assert (await mod.request("GET", "/wedge", {}, None)).status_code == 504
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        body = b"\xff" * 300_000  # ~1.2 MB per line: the pipe and the write buffer fill up
        answers = await asyncio.wait_for(
            asyncio.gather(*(mod.request("POST", "/x", {}, body) for _ in range(12))), 10
        )
        assert [a.status_code for a in answers] == [504] * 12
        assert loop.time() - t0 < 4.0
    finally:
        await mod.kill()


def test_decode_errors_do_not_echo_string_values() -> None:
    from pywatt_proto import RemoteProtocolError
    from pywatt_proto._codec import decode_init, decode_orchestrator_to_module

    line = (
        b'{"op":"http_request","request_id":"r1","method":"POST","uri":"/login",'
        b'"headers":{},"body":"password=hunter2"}'
    )
    with pytest.raises(RemoteProtocolError) as info:
        decode_orchestrator_to_module(line)
    assert "hunter2" not in str(info.value) and "body" in str(info.value)
    init = b'{"orchestrator_api":"http://x","module_id":"m","env":"DB=hunter2","listen":"x:1"}'
    with pytest.raises(RemoteProtocolError) as info:
        decode_init(init)
    assert "hunter2" not in str(info.value) and "env" in str(info.value)


SECRET_READER = """
from pywatt_asyncio import Module
from pywatt_proto import SecretUnavailable
app = Module(secret_timeout=0.3)

@app.get("/{prefix}/{name}")
async def s(request):
    import os
    try:
        value = await app.secret(request.path_params["name"])
    except SecretUnavailable:
        value = None
    return {"value": value, "env": os.environ.get("COLOUR")}
"""


def test_config_file_gives_each_module_its_own_env_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "reader.py").write_text(SECRET_READER.replace("{prefix}", "a"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "reader.py").write_text(SECRET_READER.replace("{prefix}", "b"))
    (tmp_path / "b.env").write_text("FROM_FILE=file-b\n")
    (tmp_path / "pywatt.toml").write_text(
        textwrap.dedent(
            """
            [host]
            request_timeout = 10

            [[module]]
            id = "a"
            target = "reader.py"
            env = { COLOUR = "red" }
            secrets = { TOKEN = "token-a" }

            [[module]]
            id = "b"
            target = "other/reader.py"
            env = { COLOUR = "blue" }
            secret_env = ["B_TOKEN"]
            secrets_file = "b.env"
            """
        )
    )
    run = run_host("--config", str(tmp_path / "pywatt.toml"), env={"B_TOKEN": "env-b"})
    try:

        def get(path: str) -> object:
            r = httpx.get(run.url + path, timeout=10)
            assert r.status_code == 200, (path, run.stderr)
            return r.json()

        assert get("/a/TOKEN") == {"value": "token-a", "env": "red"}
        assert get("/b/B_TOKEN") == {"value": "env-b", "env": "blue"}
        assert get("/b/FROM_FILE") == {"value": "file-b", "env": "blue"}
        assert get("/a/B_TOKEN") == {"value": None, "env": "red"}  # not a's secret
        assert get("/b/TOKEN") == {"value": None, "env": "blue"}
    finally:
        assert run.stop() == 0, run.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[module]]\ntarget = "x.py"\ncolour = "red"\n', "unknown key(s) colour"),
        ('[[module]]\ntarget = "x.py"\ncommand = ["x"]\n', "exactly one of 'target' and 'command'"),
        ("[host]\n", "no [[module]] tables"),
        ("[[module]]\ncommand = []\n", "command: expected a non-empty command line"),
        ('[host]\nhttp = "nope"\n[[module]]\ncommand = ["x"]\n', "[host]: expected HOST:PORT"),
        ('[host]\nextensions = "x"\n[[module]]\ncommand = ["x"]\n', "unknown extension(s) x"),
        ('[host]\nrestart = "always"\n[[module]]\ncommand = ["x"]\n', "[host].restart must be"),
        ('[[module]]\ntarget = "x.py"\nsecrets = { K = 1 }\n', "expected a table of strings"),
        ("[[module]\n", "pywatt.toml"),
    ],
)
def test_config_errors_are_usage_errors(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "pywatt.toml").write_text(toml)
    proc = pywatt("run", "--config", str(tmp_path / "pywatt.toml"))
    assert proc.returncode == 2
    assert message in proc.stderr.decode()


def test_access_log_names_the_module_and_front_door_flags_apply(raw: Path) -> None:
    import socket
    from urllib.parse import urlsplit

    run = run_host(HELLO, "--keepalive-timeout", "0.5", "--", sys.executable, str(raw))
    try:
        assert httpx.get(run.url + "/hello", timeout=10).status_code == 200
        assert httpx.get(run.url + "/whoami", timeout=10).status_code == 200
        run.wait_for(re.compile(r'"GET /hello HTTP/1\.1" 200 .*hello'))
        run.wait_for(re.compile(r'"GET /whoami HTTP/1\.1" 200 .*raw'))
        parts = urlsplit(run.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            t0 = time.monotonic()
            assert s.recv(65536) == b""  # idle keep-alive closed after --keepalive-timeout
            assert time.monotonic() - t0 < 3
    finally:
        assert run.stop() == 0, run.stderr
    quiet = run_host(HELLO, "--no-access-log")
    try:
        assert httpx.get(quiet.url + "/hello", timeout=10).status_code == 200
    finally:
        assert quiet.stop() == 0
    assert '"GET /hello' not in quiet.stderr


def test_front_door_limits_are_checked_when_parsed() -> None:
    for flag, value in (("--read-timeout", "0"), ("--max-connections", "-3")):
        proc = pywatt("run", "x.py", flag, value)
        assert proc.returncode == 2 and flag.encode() in proc.stderr


CRASHY = """
import os
from pywatt_asyncio import Module
app = Module()

@app.get("/crash")
async def crash(request):
    os._exit(3)

@app.get("/v")
async def v(request):
    return {"version": VERSION}

VERSION = 1
"""


def test_with_reload_a_crash_waits_for_the_next_edit(tmp_path: Path) -> None:
    mod = tmp_path / "crashy.py"
    mod.write_text(CRASHY)
    run = run_host(str(mod), "--reload")
    try:
        assert httpx.get(run.url + "/crash", timeout=10).status_code == 502
        run.wait_for(re.compile(r"crashy: module crashed; waiting for a change"))
        assert httpx.get(run.url + "/v", timeout=10).status_code == 502  # at once, not held
        assert run.proc.poll() is None  # the host stays up
        mod.write_text(CRASHY.replace("VERSION = 1", "VERSION = 2"))
        run.wait_for(re.compile(r"crashy: reloaded"), timeout=20)
        assert httpx.get(run.url + "/v", timeout=10).json() == {"version": 2}
    finally:
        assert run.stop() == 0, run.stderr


def test_with_reload_a_module_that_fails_to_start_waits_for_a_fix(tmp_path: Path) -> None:
    mod = tmp_path / "late.py"
    mod.write_text(CRASHY.replace("VERSION = 1", "VERSION = {}['not yet']"))
    run = run_host(str(mod), "--reload")
    try:
        run.wait_for(re.compile(r"late failed to start.*waiting for a change to start it"))
        assert "KeyError: 'not yet'" in run.stderr
        assert httpx.get(run.url + "/v", timeout=10).status_code == 502
        mod.write_text(CRASHY)
        run.wait_for(re.compile(r"late: reloaded"), timeout=20)
        assert httpx.get(run.url + "/v", timeout=10).json() == {"version": 1}
    finally:
        assert run.stop() == 0, run.stderr
