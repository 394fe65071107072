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
import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from georank.config import GeorankConfig, load_config
from georank.config.messages import describe_validation_error
from georank.errors import ConfigError, GeorankError, SetupError
from georank.runs import record_run

log = logging.getLogger("georank")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Summary(dict[str, Any]):
    """The job's summary: counts and per-stage seconds; printed as one JSON line."""


_RUN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_OPTION_NAME = re.compile(r"--[A-Za-z][A-Za-z0-9_-]{0,40}")


def run_date_arg(text: str) -> dt.date:
    """``--run-date`` of every job: exactly ``YYYY-MM-DD`` (``date.fromisoformat`` alone would also take
    ``20261123`` and ``2026-W47-1``). Raises :class:`argparse.ArgumentTypeError`, so a bad date is a
    usage error (exit 2) naming the expected form and what was given (a date is no secret)."""
    if not _RUN_DATE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD (e.g. 2026-11-23), got {text!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a calendar date as YYYY-MM-DD, got {text!r} ({exc})") from None


class _Parser(argparse.ArgumentParser):
    """argparse, except that it never prints a stray value back: ``--set KEY VALUE`` (a space for the
    ``=``) leaves VALUE, maybe a secret, as an unrecognised argument; only option names are listed."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            names = [n for a in extras if _OPTION_NAME.fullmatch(n := a.split("=", 1)[0])]
            n_values = len(extras) - len(names)
            shown = ", ".join(names) if names else "none"
            more = f" and {n_values} more value{'s' * (n_values != 1)} (not shown: it may be a secret)" if n_values else ""
            self.error(f"unrecognized arguments: {shown}{more}; expected --conf, --set KEY=VALUE and the job's options (see --help)")
        return ns


class _UsageError(Exception):
    """Raised by :class:`_CheckParser` instead of exiting."""


class _CheckParser(_Parser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message}")


def base_parser(job: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"spark-submit.sh jobs/{job}.py", description=f"georank {job} job")
    p.add_argument("--conf", required=True, help="YAML config, e.g. conf/local.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help='override a config key; a key part in double quotes is one key: spark.conf."spark.ui.port"=4041')
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
    started_at = dt.datetime.now(dt.UTC)
    cfg: GeorankConfig | None = None  # stays None on a config error: then no runs row (no tables.runs)
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
    except ValidationError as exc:  # pydantic's own text repeats every input value: never shown
        text = describe_validation_error(exc)
        log.error("job %s failed: %s", job, text)
        summary.update(status="failed", error=f"ValidationError: {text}")
        code = EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the summary line must still be printed
        log.exception("job %s failed", job)
        summary.update(status="failed", error=f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        code = EXIT_FAILED
    summary["seconds_total"] = round(time.monotonic() - started, 3)
    # The runs table (georank.runs): ok and failed runs alike; never changes the code or the summary.
    record_run(cfg, dict(summary), exit_code=code, started_at=started_at, ended_at=dt.datetime.now(dt.UTC),
               run_date=getattr(args, "run_date", None))
    _emit(summary)
    return code


def check_config_main(argv: list[str] | None = None) -> int:
    """``python -m georank.cli --job NAME --conf X [--set k=v]``: validate a config and exit. Used by
    spark-submit.sh to fail in a second, before a JVM starts; on failure it prints the message on
    stderr and, like every job, one JSON summary line on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    job = "unknown"
    if "--job" in argv[:-1]:
        job = argv[argv.index("--job") + 1]
    p = _CheckParser(prog=f"spark-submit.sh jobs/{job}.py", add_help=False, allow_abbrev=False)
    p.add_argument("--job", default="unknown")
    p.add_argument("--conf")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--run-date", type=run_date_arg)  # every job's date argument, checked before a JVM starts
    try:
        args, _ = p.parse_known_args(argv)
    except _UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        _emit({"job": job, "status": "failed", "error": f"bad command line: {exc}"})
        return EXIT_USAGE
    try:
        if not args.conf:
            raise ConfigError("no --conf given: expected --conf PATH, e.g. --conf conf/local.yaml")
        load_config(args.conf, args.set)
    except ConfigError as exc:  # its text names keys and kinds, never a value
        sys.stderr.write(f"georank: {exc}\n")
        _emit({"job": args.job, "status": "failed", "error": f"ConfigError: {exc}"})
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(check_config_main())
