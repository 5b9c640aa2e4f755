# Convenience targets; each sets up (or reuses) .venv first.
PY := .venv/bin/python

.PHONY: setup run test test-slow bench
setup:
	bash scripts/setup.sh
run: setup
	$(PY) -m mfexp
test:
	bash scripts/setup.sh --test && $(PY) -m pytest -q
test-slow:
	bash scripts/setup.sh --test && $(PY) -m pytest -q -m slow
bench: setup
	$(PY) benchmarks/generate.py
