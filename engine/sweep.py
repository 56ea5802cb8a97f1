"""``python -m engine.sweep SWEEP_DIR [--metric sharpe] [--ascending]``: the sweep summary task.

The task itself is :mod:`engine.tasks.sweep`; this module is only its command line.
"""

if __name__ == "__main__":
    from engine.tasks.sweep import main

    main()
