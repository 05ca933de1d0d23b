# The two commands of the README:  make demo  |  make test
# Both create .venv and install calobench with every first-party plugin.
# TORCH: the CPU build by default; on a GPU machine install your CUDA torch into .venv
# first (or `make TORCH=torch demo`), any torch 2.x satisfies calobench's range.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
PLUGINS := $(wildcard plugins/*/pyproject.toml) examples/calobench-example/pyproject.toml

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

demo: install
	$(VENV)/bin/calobench run --model hgcal_wgan --dataset hgcal --leaderboard leaderboard

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs
