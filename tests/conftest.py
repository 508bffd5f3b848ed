"""Shared by every test tier. Its folder is on sys.path, so tests import helpers such as ``tgi_contract``."""
