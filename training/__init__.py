"""Training and data preparation for the radbridge impression model (not part of the installed package)."""
