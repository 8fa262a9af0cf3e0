"""Browser tests: the web console in Debian's headless Chromium (see kit.py)."""
