# Aliases for the README commands; the scripts are the source of truth.
.PHONY: demo test lint
demo:
	scripts/demo
test:
	scripts/test
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports
