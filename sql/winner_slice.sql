-- Bars of the given symbols in [start, end), read over the Hive-partitioned parquet store.
-- $files: the partitions' parquet files (only the requested symbols'); $symbols, $start, $end bound by DuckDB.
-- In no order (no ORDER BY: DuckDB streams the rows, engine/data/panel.py puts each in its own cell).
SELECT
    replace(symbol, '_', '/') AS symbol,
    epoch_ms(timestamp) AS ts_ms,
    open, high, low, close, volume
FROM read_parquet($files, hive_partitioning = true)
WHERE replace(symbol, '_', '/') IN (SELECT unnest($symbols))
  AND timestamp >= make_timestamp($start * 1000)
  AND timestamp < make_timestamp($end * 1000)
