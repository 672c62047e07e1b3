"""The command line: argument parsing into typed specs, one module per command, no logic beyond wiring."""
