-- Per symbol: first and last bar open time (epoch ms) and bar count, over every partition of a glob.
SELECT
    replace(symbol, '_', '/') AS symbol,
    epoch_ms(min(timestamp)) AS first_ms,
    epoch_ms(max(timestamp)) AS last_ms,
    count(*) AS n_bars
FROM read_parquet($glob, hive_partitioning = true)
GROUP BY symbol
ORDER BY symbol
