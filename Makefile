# Convenience targets; everything runs through scripts/test (which sets up the venv when missing).
.PHONY: test chaos lint bench proto

test:
	./scripts/test

lint:
	.venv/bin/ruff check .

# A longer chaos soak than CI's: 500 manager kills (or CHAOS_SECONDS), report in docs/chaos-report.md.
chaos:
	CHAOS_KILLS=$${CHAOS_KILLS:-500} CHAOS_SECONDS=$${CHAOS_SECONDS:-1800} CHAOS_TIMEOUT=3600 \
	CHAOS_REPORT=docs/chaos-report.md ./scripts/test tests/chaos -k "not filling" -s

# runc alone vs shimd vs containerd, side by side (issue 10's goals); results in docs/benchmarks.md. Installs
# containerd if missing. Run it on a quiet machine: the full run takes minutes (500 containers; BENCH_SCALE=0 skips
# that part). BENCH_QUICK=1 checks that it works (5 containers, no scale part, written to /tmp/shimd-bench-quick.md).
# The CRI part (bench/cri.py: crictl runp + create + start of host-network and CNI pods, shimd against containerd's
# CRI, both in a network namespace of their own) runs last; BENCH_CRI=0 skips it, BENCH_ONLY=cri runs it alone and
# replaces its section of the output file.
bench:
	scripts/setup
	command -v containerd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd
	tini -s -- .venv/bin/python bench/run.py

# The CRI v1 API's Python stubs, from the proto of cri-api v0.26 (gogoproto's options stripped: Python needs none).
proto:
	.venv/bin/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. manager/cri/pb/api.proto
