"""Several daemons, one database: app leases, fair share, one-shot leases."""
