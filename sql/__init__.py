"""DuckDB queries loaded by :mod:`engine.sql`; shipped in the wheel as ``engine.queries``."""
