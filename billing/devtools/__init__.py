"""Development tools for local runs and tests (emulators of outside systems); never used in production."""
