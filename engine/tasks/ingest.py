"""``task=ingest``: the universe's base bars into the data's own lakehouse namespace."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import RunConfig
from engine.tasks.guards import data_errors


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did: the files passed over or refused, and its one-line summary or error."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file name, why) of every file that is not a pair's bars."""
    not_imported: list[str] = field(default_factory=list)
    """Why each refused file was refused (the good ones are imported)."""
    summary: str | None = None
    """The ``ingested N bars for K symbols (...) into ...`` line."""
    error: str | None = None
    """Why nothing was read (then nothing was written)."""

    @property
    def exit_code(self) -> int:
        """0, or 1 when a file could not be imported or nothing at all was read."""
        return 1 if self.error is not None or self.not_imported else 0


def ingest_run(cfg: RunConfig) -> IngestResult:
    """Ingest the universe's base bars (daily unless ``backtest.interval``) of ``cfg.data`` (coverage-aware)."""
    from engine.data.ingest import IngestionService, NothingRead, day_text, nothing_read, universe_ingest
    from engine.data.lakehouse import store_open
    from engine.data.sources.registry import source_from_config

    with data_errors(cfg.paths.lakehouse_dir, cfg.data.source):
        source = source_from_config(cfg.data)
        lake = store_open(cfg.paths.lakehouse_dir, source.identity())
        service = IngestionService(lake, source, quiet=cfg.quiet)
        skipped = [(path.name, why) for path, why in source.skipped()]
        try:
            report, plan = universe_ingest(service, cfg, strict=False)
        except NothingRead as exc:
            return IngestResult(skipped, error=str(exc))
    if not plan.symbols or (report.fetched and report.bars_read == 0):
        return IngestResult(skipped, list(plan.bad), error=nothing_read(cfg, plan, source))
    done = "; nothing new (already covered)" if not report.fetched else ""
    base = cfg.backtest.interval
    summary = (
        f"ingested {report.rows_written} {'daily' if base == '1d' else base} bars for {len(plan.symbols)} symbols "
        f"({day_text(plan.start_ms)} .. {day_text(plan.end_ms)}{done}) into {lake.url()}"
    )
    return IngestResult(skipped, list(plan.bad), summary)
