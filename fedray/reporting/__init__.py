"""Reporting: method-comparison tables, paired tests and plots from tracked studies."""
