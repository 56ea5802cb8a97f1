-- The leaderboard of a sweep: one row per job that wrote metrics.json, its params.json joined on the
-- job directory, ranked by the metric named $metric (highest first when $descending).
-- Both JSON files are read as text (read_text always carries the filename) and fields are pulled out
-- by name: read_json_auto would infer one schema from a sample of the files, so a key that is null
-- in the sampled jobs, or missing from an older job, could change types or fail the whole read.
-- Keys are plain names (no leading '$'), so config keys with dots such as exit_rules.sl_stop work.
WITH metrics AS (
    SELECT parse_dirpath(filename) AS job_dir, CAST(content AS JSON) AS m
    FROM read_text($metrics_files)
),
params AS (
    SELECT parse_dirpath(filename) AS job_dir, CAST(content AS JSON) AS p
    FROM read_text($params_files)
),
jobs AS (
    SELECT
        substr(metrics.job_dir, length($root) + 2) AS job,
        json_extract_string(m, 'engine_version') AS engine_version,
        TRY_CAST(json_extract_string(m, $metric) AS DOUBLE) AS metric_value,
        TRY_CAST(json_extract_string(m, 'total_return') AS DOUBLE) AS total_return,
        TRY_CAST(json_extract_string(m, 'sharpe') AS DOUBLE) AS sharpe,
        TRY_CAST(json_extract_string(m, 'max_drawdown') AS DOUBLE) AS max_drawdown,
        TRY_CAST(json_extract_string(m, 'n_trades') AS BIGINT) AS n_trades,
        TRY_CAST(json_extract_string(m, 'n_ambiguous_exits') AS BIGINT) AS n_ambiguous_exits,
        TRY_CAST(json_extract_string(m, 'skewness') AS DOUBLE) AS skewness,
        TRY_CAST(json_extract_string(m, 'kurtosis') AS DOUBLE) AS kurtosis,
        TRY_CAST(json_extract_string(m, 'n_returns') AS BIGINT) AS n_returns,
        -- equity marks per year (365 on daily bars; jobs of older engines: 365)
        coalesce(TRY_CAST(json_extract_string(m, 'periods_per_year') AS DOUBLE), 365.0) AS periods_per_year,
        -- the keys a leaderboard can be ranked by: numbers, or null in this job
        list_filter(
            json_keys(m), lambda k: json_type(m, k) IN ('DOUBLE', 'BIGINT', 'UBIGINT', 'NULL')
        ) AS numeric_keys,
        CAST(coalesce(p, '{}') AS VARCHAR) AS params
    FROM metrics
    LEFT JOIN params USING (job_dir)
)
SELECT
    row_number() OVER (
        ORDER BY
            CASE WHEN $descending THEN -metric_value ELSE metric_value END ASC NULLS LAST,
            -- Hydra numbers jobs 0, 1, ..., 10: compare those as numbers, not as text
            TRY_CAST(job AS BIGINT) NULLS LAST,
            job
    ) AS rank,
    *
FROM jobs
ORDER BY rank
