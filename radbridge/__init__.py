"""radbridge: draft radiology impressions inside the reporting workflow, on-prem."""

__version__ = "0.1.0"
