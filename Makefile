VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint sim bench run demo soak crashloop clean proto

# __init__.py holds the version (pyproject reads it): a bump reinstalls the
# metadata that importlib.metadata and `pip show` report.
$(STAMP): pyproject.toml liferaft/__init__.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole suite: unit, golden, property and scenario tests (with the core's
# branch-coverage gate), then 1000 random simulator seeds.
test: $(STAMP)
	$(PY) -m pytest -n 2 --cov --cov-report=term:skip-covered --cov-fail-under=95
	$(PY) -m liferaft.sim --seeds 1000 --nodes 5 --jobs 2

lint: $(STAMP)
	$(VENV)/bin/ruff check liferaft tests examples
	$(VENV)/bin/mypy

sim: $(STAMP)
	$(PY) -m liferaft.sim --seeds 10000 --nodes 5 --jobs 2

# Benchmarks (not tests): the core, the WAL, and a 3-process cluster side by
# side with PySyncObj (bench/raft_bench.py). Figures go to BENCHMARKS.md.
bench: $(STAMP)
	$(PY) -m liferaft.sim --bench
	$(PY) -m liferaft.storage.bench
	if [ -f bench/raft_bench.py ]; then $(PY) bench/raft_bench.py; fi

# liferaft-kv and etcd 3.4 (when installed: scripts/install-etcd.sh), 3 nodes
# each, the same HTTP load generator (liferaft bench kv) for both; then the
# same through etcd's protocol (JSON gateway, and gRPC with h2load:
# scripts/install-h2load.sh).
bench-kv: $(STAMP)
	$(PY) bench/kv_bench.py
	$(PY) bench/kv_etcd_api.py
	$(PY) bench/watch_fanout.py
	$(PY) bench/lease_keepalive.py
	$(PY) bench/kv_scale.py --keys 1000000

# Ctrl-C, or `liferaft cluster down --dir ./liferaft-data` from another
# terminal, stops every node it started (by PID).
run: $(STAMP)
	$(PY) -m liferaft.cli cluster up --nodes 3 --dir ./liferaft-data

# Fault injection against real processes (docs/chaos.md): TIME seconds, SEED.
soak: $(STAMP)
	$(PY) -m liferaft.chaos soak --time $(or $(TIME),300) --seed $(or $(SEED),1) --nodes 5

crashloop: $(STAMP)
	$(PY) -m liferaft.chaos crashloop --rounds $(or $(ROUNDS),100) --seed $(or $(SEED),1)

demo: $(STAMP)
	$(PY) -m liferaft.sim.demo

# Regenerate liferaft/etcd/proto/ from its .proto files (docs/etcd.md); the
# generated modules are committed, so only a .proto change needs this.
proto: $(STAMP)
	PYTHON=$(PY) scripts/gen-proto.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
