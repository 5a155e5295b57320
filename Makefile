# The two commands a user needs: `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: venv demo test bench
venv:
	@bash tools/setup_venv.sh

demo: venv
	$(PY) -m seem_ros.demo

test: venv
	$(PY) -m pytest -q test

bench: venv
	$(PY) -m seem_ros.benchmarks.model_bench
