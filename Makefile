# `make demo` and `make test` create .venv when it is missing and keep it in step with pyproject.toml.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp
BIN := $(VENV)/bin

.PHONY: demo test bench samples clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@echo "== forensics detect on bundled samples (one real photo, one VAE sample, one real clip)"
	@time -p $(BIN)/forensics detect forensics/samples/real_photo.png forensics/samples/vae_sample.png forensics/samples/real_clip.mp4

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Re-make the bundled samples from the shipped checkpoints (what `make demo` scores).
samples: $(STAMP)
	$(BIN)/python -m forensics.samples

clean-venv:
	rm -rf $(VENV)
