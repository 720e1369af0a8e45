"""Run directories and open formats: the only code that opens files in a run directory."""
