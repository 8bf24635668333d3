# Convenience targets; everything runs through scripts/test (which sets up the venv when missing).
.PHONY: test chaos lint bench

test:
	./scripts/test

lint:
	.venv/bin/ruff check .

# A longer chaos soak than CI's: 500 manager kills (or CHAOS_SECONDS), report in docs/chaos-report.md.
chaos:
	CHAOS_KILLS=$${CHAOS_KILLS:-500} CHAOS_SECONDS=$${CHAOS_SECONDS:-1800} CHAOS_TIMEOUT=3600 \
	CHAOS_REPORT=docs/chaos-report.md ./scripts/test tests/chaos -k "not filling" -s

# runc alone vs shimd vs containerd, side by side; results in docs/benchmarks.md. Installs containerd if missing.
bench:
	scripts/setup
	command -v containerd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd
	tini -s -- .venv/bin/python bench/run.py
