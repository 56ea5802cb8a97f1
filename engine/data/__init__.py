"""Data layer: bar contract, lakehouse storage, sources and the lazy MTF ingestion service."""
