"""Rendering a result folder: comment.md, summary.md and report.html
(Jinja2 templates in templates/), the charts and the untrusted-text rules
for GitHub Markdown. Imports the core and nothing above it."""
