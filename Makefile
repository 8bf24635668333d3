# Convenience targets; everything runs through scripts/test (which sets up the venv when missing).
.PHONY: test chaos lint

test:
	./scripts/test

lint:
	.venv/bin/ruff check .

# A longer chaos soak than CI's: 500 manager kills (or CHAOS_SECONDS), report in docs/chaos-report.md.
chaos:
	CHAOS_KILLS=$${CHAOS_KILLS:-500} CHAOS_SECONDS=$${CHAOS_SECONDS:-1800} CHAOS_TIMEOUT=3600 \
	CHAOS_REPORT=docs/chaos-report.md ./scripts/test tests/chaos -k "not filling" -s
