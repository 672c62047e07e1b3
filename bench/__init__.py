"""archbench engine and CLI: profile, run, check, report. See README.md."""
