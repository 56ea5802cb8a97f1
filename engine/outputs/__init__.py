"""What a run leaves: artefacts, the report, the trial ledger, the run directory, the console lines."""
