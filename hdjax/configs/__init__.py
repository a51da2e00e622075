"""Run configs shipped with the package: `--config=pifuhd[:variant]` from any directory."""
