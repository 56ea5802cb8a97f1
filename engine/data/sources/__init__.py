"""Data sources: one class per backend behind :class:`~engine.data.sources.base.DataSource`."""
