"""intelbus/cli package."""
