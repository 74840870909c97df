"""runwatch: the system of record for data-pipeline runs."""

__version__ = "0.1.0"
