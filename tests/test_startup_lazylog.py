"""``pywatt_proto._lazylog``: the drivers' loggers load ``logging`` only for a record to emit.

Each case runs in a fresh interpreter: whether ``logging`` is loaded is process-wide.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "%(levelname)s %(name)s %(funcName)s:%(lineno)d %(message)s"


def run(code: str) -> tuple[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout, proc.stderr


def test_records_below_the_deferred_level_load_nothing_and_the_first_one_above_configures() -> None:
    out, err = run(
        f"""
        import sys
        from pywatt_proto._lazylog import LazyLogger, basic_config
        log = LazyLogger("pywatt.t")
        basic_config(level="WARNING", format={FORMAT!r})
        def handler():
            log.debug("d %s", 1)
            log.info("i")
            print("before", "logging" in sys.modules, log.isEnabledFor(20))
            log.warning("w %s", 2)
            print("after", "logging" in sys.modules)
            try:
                1 / 0
            except ZeroDivisionError:
                log.exception("boom")
            log.info("i2")
            log.log(50, "c")
        handler()
        """
    )
    assert out.splitlines() == ["before False False", "after True"]
    lines = err.splitlines()
    assert lines[0] == "WARNING pywatt.t handler:10 w 2"  # the caller's line, not _lazylog's
    assert lines[1] == "ERROR pywatt.t handler:15 boom"
    assert "ZeroDivisionError" in err
    assert not [x for x in lines if x.startswith(("DEBUG", "INFO"))]  # below the level
    assert lines[-1] == "CRITICAL pywatt.t handler:17 c"


def test_logging_already_loaded_is_configured_at_once() -> None:
    out, err = run(
        f"""
        import logging
        from pywatt_proto._lazylog import LazyLogger, basic_config
        basic_config(level="INFO", format={FORMAT!r})
        print(len(logging.getLogger().handlers), logging.getLogger().level)
        logging.getLogger("app").info("from the app")
        """
    )
    assert out.split() == ["1", "20"]
    assert "INFO app <module>:6 from the app" in err


def test_an_existing_root_handler_is_kept() -> None:
    _out, err = run(
        f"""
        from pywatt_proto._lazylog import LazyLogger, basic_config
        basic_config(level="DEBUG", format={FORMAT!r})
        import logging
        logging.basicConfig(format="APP %(message)s", level=logging.DEBUG)
        LazyLogger("pywatt.t").debug("x")
        """
    )
    assert err.strip() == "APP x"


def test_an_unknown_level_name_fails_as_logging_would() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pywatt_proto._lazylog import basic_config\n"
            "basic_config(level='LOUD', format='%(message)s')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "LOUD" in proc.stderr
