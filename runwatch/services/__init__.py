"""Background work driven by rows in the database, safe to run in any number of processes."""
