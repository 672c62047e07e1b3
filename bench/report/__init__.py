"""Rendering: tables, markdown, JSON/CSV, plots, roofline — of analyze's results only."""
