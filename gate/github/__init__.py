"""GitHub: the Actions context, the REST client (the only module that talks
HTTP), publishing a result (sticky comment, commit status or check run,
outputs) and workflow commands. Never imports the command layer."""
