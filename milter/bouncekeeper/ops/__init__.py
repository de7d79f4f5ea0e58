"""The operator commands that are not daemons: classify files, health checks, imports, the manual page and
the MTA set-up (`setup/`)."""
