"""DuckDB queries loaded by :mod:`engine.data.sql`; shipped in the wheel as ``engine.queries``."""
