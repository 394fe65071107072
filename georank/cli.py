"""What every job entry point shares (driver side): arguments, config, the JSON summary line.

A job in ``jobs/`` is::

    def main(args, cfg, summary) -> None: ...
    if __name__ == "__main__":
        run_job("geotag", main, add_args=add_args)

:func:`run_job` parses ``--conf`` and repeated ``--set k=v``, validates the config
before anything else, runs ``main``, and always ends by printing ONE line of
JSON (``{"job": ..., "status": "ok"|"failed", ...}``) to stdout. Exit codes:
0 success, 1 a run failed, 2 a usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from georank.config import GeorankConfig, load_config
from georank.errors import ConfigError, GeorankError, SetupError

log = logging.getLogger("georank")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Summary(dict[str, Any]):
    """The job's summary: counts and per-stage seconds; printed as one JSON line."""


def base_parser(job: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"spark-submit.sh jobs/{job}.py", description=f"georank {job} job")
    p.add_argument("--conf", required=True, help="YAML config, e.g. conf/local.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return p


def _emit(summary: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(summary, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def run_job(
    job: str,
    main: Callable[[argparse.Namespace, GeorankConfig, Summary], None],
    *,
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Parse, load config, run ``main``, print the summary line; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # spark-submit merges the driver's stderr into its stdout, and py4j logs "Closing down
    # clientserver connection" at exit, after the summary: keep the summary the last line.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    parser = base_parser(job)
    if add_args is not None:
        add_args(parser)
    summary = Summary(job=job, run_id=f"{job}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already said what was wrong on stderr
        code = int(exc.code or 0)
        if code:
            summary.update(status="failed", error="bad command line (see the message above)")
            _emit(summary)
        return code
    started = time.monotonic()
    try:
        cfg = load_config(args.conf, args.set)
        main(args, cfg, summary)
        summary["status"] = "ok"
        code = EXIT_OK
    except (ConfigError, SetupError) as exc:
        log.error("%s", exc)
        summary.update(status="failed", error=f"{exc.__class__.__name__}: {exc}")
        code = EXIT_USAGE
    except GeorankError as exc:
        log.error("%s", exc)
        summary.update(status="failed", error=f"{exc.__class__.__name__}: {exc}")
        code = EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the summary line must still be printed
        log.exception("job %s failed", job)
        summary.update(status="failed", error=f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        code = EXIT_FAILED
    summary["seconds_total"] = round(time.monotonic() - started, 3)
    _emit(summary)
    return code


def check_config_main(argv: list[str] | None = None) -> int:
    """``python -m georank.cli --job NAME --conf X [--set k=v]``: validate a config and exit. Used by
    spark-submit.sh to fail in a second, before a JVM starts; on failure it prints the message on
    stderr and, like every job, one JSON summary line on stdout."""
    p = argparse.ArgumentParser(prog="georank-check-config")
    p.add_argument("--job", default="unknown")
    p.add_argument("--conf")
    p.add_argument("--set", action="append", default=[])
    args, _ = p.parse_known_args(argv)
    try:
        if not args.conf:
            raise ConfigError("no --conf given: expected --conf PATH, e.g. --conf conf/local.yaml")
        load_config(args.conf, args.set)
    except ConfigError as exc:
        sys.stderr.write(f"georank: {exc}\n")
        _emit({"job": args.job, "status": "failed", "error": f"ConfigError: {exc}"})
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(check_config_main())
