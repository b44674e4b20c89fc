"""The long-running daemon: its loops, monitor, health, HTTP server and systemd glue."""
