"""What goes into a run directory, and how: strict JSON, redacted secrets, a completeness mark.

- Every JSON artefact goes through :func:`json_dumps` (``allow_nan=False``): a NaN or an infinity
  is a bug to report, never a bare ``NaN``/``Infinity`` that strict JSON readers reject.
- Credentials in URLs (``http://user:pw@host``, ``?apikey=...``) are replaced by ``***`` in every
  file and message a run writes (:func:`redact`); the run itself still uses them.
- A run directory is complete when it holds ``_COMPLETE``, written last. A run first removes the
  artefacts (and ``error.txt``) of an earlier run in the same directory, so a directory without
  ``_COMPLETE`` is a run that failed (its reason in ``error.txt``) or was killed while writing.
- A run claims its directory first (:func:`run_dir_claim`): it refuses an existing folder that no
  run wrote (it would replace or delete the user's files), and holds an exclusive ``fcntl`` lock on
  the run marker ``.engine-run`` while it runs, so a second run into the same folder is refused
  instead of replacing the first one's artefacts. The kernel drops the lock when the process dies
  (even by ``kill -9``); the marker stays and names the folder a run directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from engine.core.errors import ConfigError, EngineError

# the file names of a run directory, defined here only: every module names them through these
COMPLETE = "_COMPLETE"
ERROR = "error.txt"
MARKER = ".engine-run"  # every run directory holds it; locked while a run writes there
CONFIG_YAML = "config.yaml"
MANIFEST_JSON = "manifest.json"
METRICS_JSON = "metrics.json"
PARAMS_JSON = "params.json"
EQUITY_PARQUET = "equity.parquet"
ORDERS_PARQUET = "orders.parquet"
TRADES_PARQUET = "trades.parquet"
WINNERS_PARQUET = "winners.parquet"
AUDIT_JSONL = "audit.jsonl"
REPORT_HTML = "report.html"
WFO_PARQUET = "wfo.parquet"
CAPACITY_PARQUET = "capacity.parquet"
CAPACITY_JSON = "capacity.json"
# what makes an existing folder an earlier run's directory (params.json: runs before the marker)
RUN_MARKS = (MARKER, COMPLETE, PARAMS_JSON)
# files a run (re)writes at the top of its directory: removed before a run starts in it
ARTEFACTS = (
    COMPLETE,
    ERROR,
    CONFIG_YAML,
    MANIFEST_JSON,
    METRICS_JSON,
    PARAMS_JSON,
    EQUITY_PARQUET,
    ORDERS_PARQUET,
    TRADES_PARQUET,
    WINNERS_PARQUET,
    AUDIT_JSONL,
    REPORT_HTML,
    WFO_PARQUET,
    CAPACITY_PARQUET,
    CAPACITY_JSON,
)

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|secret|api[_-]?secret|password|passwd|pw"
    r"|signature|sig|auth|client[_-]?secret)=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with URL credentials (user:password@, secret query parameters) replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('key')}***", text)


class RedactFilter(logging.Filter):
    """A handler filter that passes every record through :func:`redact`: message, arguments, exception text.

    Installed once on the handlers (:func:`log_redaction_install`), so no call site has to remember
    to redact what it logs: the record's message is formatted with its arguments and redacted (the
    arguments then cleared), and its exception and stack text are formatted and redacted too.
    """

    _format = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._format.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def log_redaction_install(logger: logging.Logger | None = None) -> None:
    """Give every handler of ``logger`` (default: the root logger) one :class:`RedactFilter`."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())


def redact_obj(obj: object) -> object:
    """:func:`redact` applied to every string of a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


def _default(obj: object) -> object:
    if isinstance(obj, dt.datetime | dt.date | Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    msg = f"{obj.__class__.__name__} is not JSON serialisable"
    raise TypeError(msg)


def json_dumps(obj: object, indent: int | None = 2) -> str:
    """Strict JSON (no NaN/Infinity: ``ValueError``), keys sorted, secrets redacted."""
    return json.dumps(redact_obj(obj), indent=indent, sort_keys=True, allow_nan=False, default=_default)


def json_write(path: Path, obj: object) -> None:
    """Write :func:`json_dumps` of ``obj`` atomically."""
    from engine.data.lakehouse import atomic_write_bytes

    atomic_write_bytes(path, (json_dumps(obj) + "\n").encode())


def run_dir_reset(out: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove a previous run's artefacts from ``out`` (a reused run directory starts clean)."""
    for name in ARTEFACTS:
        if name not in keep:
            (out / name).unlink(missing_ok=True)


def run_complete(out: Path, files: list[str]) -> None:
    """Write ``_COMPLETE`` (the last file of a run): the artefacts it vouches for."""
    json_write(out / COMPLETE, {"status": "complete", "files": sorted(files)})


def hydra_files_redact(out: Path) -> None:
    """Redact the config copies Hydra wrote before the job started (``.hydra/*.yaml``, ``multirun.yaml``)."""
    for path in [*out.glob(".hydra/*.yaml"), *out.parent.glob("multirun.yaml")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        clean = redact(text)
        if clean != text:
            path.write_text(clean)


class RunDirBusy(ConfigError):
    """Another live run holds the lock of the run directory (its files are not this run's to touch)."""

    def __init__(self, message: str, folder: Path) -> None:
        super().__init__(message)
        self.folder = folder


_HELD: dict[Path, int] = {}  # run directories this process holds the lock of: nesting depth


def run_dir_check(out: Path, key: str = "paths.output_dir", ignore: tuple[str, ...] = ()) -> None:
    """Refuse an existing, non-empty folder that is not an earlier run's directory (no run marker).

    ``ignore``: entries someone else put there for this run (Hydra's ``.hydra`` and log).
    """
    try:
        if not out.is_dir() or any((out / m).exists() for m in RUN_MARKS):
            return
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ignore)
    except OSError:  # not readable: the writability check (or the first write) reports it
        return
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        msg = (
            f"{key}={out} is an existing folder that no engine run wrote (it holds {shown}): a run would replace "
            f"or delete files there; set {key} to a new or empty folder, or to an earlier run's directory"
        )
        raise ConfigError(msg)


def _busy_message(out: Path, key: str) -> str:
    return (
        f"{key}={out} is in use by another run that is still writing there (it holds the lock on "
        f"{out / MARKER}): wait for it to finish or set {key} to another folder"
    )


def run_dir_free_check(out: Path, key: str = "paths.output_dir") -> None:
    """Refuse, before anything is written, a folder another live run holds (:class:`RunDirBusy`).

    For a run whose Hydra folder is its run directory: Hydra writes there before the job can claim it.
    """
    try:
        fd = os.open(out / MARKER, os.O_RDONLY)
    except OSError:  # no marker (a new folder or no run's), or unreadable: the claim decides
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirBusy(_busy_message(out, key), out.resolve()) from None
    finally:
        os.close(fd)  # closing drops the probe's lock


@contextlib.contextmanager
def run_dir_claim(out: Path, key: str = "paths.output_dir", ignore: tuple[str, ...] = ()) -> Iterator[None]:
    """Claim ``out`` for this run: :func:`run_dir_check`, then hold the run marker's exclusive lock.

    Re-entrant in one process (the command line claims the directory, the run function again).
    A folder another live run holds is refused (:class:`RunDirBusy`). A run that fails before it
    wrote anything into a folder it created leaves no folder behind.
    """
    where = out.resolve()
    if _HELD.get(where):
        _HELD[where] += 1
        try:
            yield
        finally:
            _HELD[where] -= 1
        return
    run_dir_check(out, key, ignore)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(_busy_message(out, key), where) from None
        _HELD[where] = 1
        try:
            yield
        except BaseException:
            if created and [p.name for p in out.iterdir()] == [MARKER]:  # failed before writing: leave nothing
                (out / MARKER).unlink()
                out.rmdir()
            raise
        finally:
            del _HELD[where]
    finally:
        os.close(fd)  # closing drops the lock


def run_dir_held() -> list[Path]:
    """Return the run directories this process holds (where a failing run writes its ``error.txt``)."""
    return list(_HELD)


# ---- the Hydra job: its parameters, its error, its log -------------------------------------------


def params_write(out: Path) -> None:
    """``params.json``: the command-line overrides of this job, keyed by config path (for sweeps)."""
    from hydra.core.hydra_config import HydraConfig

    params: dict[str, str] = {}
    for item in HydraConfig.get().overrides.task:
        key, _, value = item.partition("=")
        params[key.lstrip("+~")] = value
    out.mkdir(parents=True, exist_ok=True)
    json_write(out / PARAMS_JSON, params)


def error_message(exc: BaseException) -> str:
    """Return what ``error.txt`` says about ``exc``: a user error's line, else its class and text."""
    return str(exc) if isinstance(exc, EngineError) else f"{exc.__class__.__name__}: {exc}"


def error_write(message: str, out: Path | None = None, log_it: bool = True) -> None:
    """``error.txt`` in ``out`` (default: the job's Hydra directory): why it failed (secrets redacted).

    The sweep summary reads it. Best effort: when the directory itself cannot be written, the error
    on stderr is what is left, and this write must not replace it with its own.
    """
    from hydra.core.hydra_config import HydraConfig

    from engine.data.lakehouse import atomic_write_bytes

    if out is None:
        try:
            out = Path(HydraConfig.get().runtime.output_dir)
        except ValueError:
            return
    log_redaction_install()  # the run may have failed before logging_setup
    # into engine.log only (its handler redacts it): the console already gets the one-line error
    log = logging.getLogger("engine")
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers if log_it else []:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / ERROR, (redact(message) + "\n").encode())
    except OSError:
        pass


def logging_setup() -> None:
    """Send INFO and up to the run's ``engine.log`` (Hydra's file handler), only warnings to the console.

    Every handler redacts what it writes (:class:`engine.outputs.rundir.RedactFilter`): no secret of a URL
    reaches a log, whichever call site logged it.
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setLevel(logging.INFO if isinstance(handler, logging.FileHandler) else logging.WARNING)
    for noisy in ("numba", "urllib3", "choreographer", "kaleido", "asyncio", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    log_redaction_install(root)


@contextlib.contextmanager
def artefact_errors(out: Path) -> Iterator[None]:
    """Report a run directory that cannot be written as one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or out
        msg = f"cannot write the run's artefacts into {out}: {exc.strerror or exc} ({where}): choose a writable output folder"
        raise EngineError(msg) from None


def run_dir_prepare(hydra_dir: Path, out: Path) -> None:
    """Make a Hydra job's directories ready for its run.

    Redacts Hydra's config copies, clears an earlier run's artefacts from the job's Hydra directory
    and the output directory, sends the log to the run's ``engine.log`` and writes ``params.json``.
    """
    with artefact_errors(out):
        hydra_files_redact(hydra_dir)
        for folder in {hydra_dir, out}:
            run_dir_reset(folder)
        logging_setup()
        params_write(out)
