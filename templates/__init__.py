"""Jinja2 templates for comment.md, report.html and summary.md (shipped as gate.templates)."""
