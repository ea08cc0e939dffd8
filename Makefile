# Hypura: `make build` (venv + llama.cpp + binding), `make test`, `make serve`.
# Every step is stamped, so a second `make build` with nothing changed finishes in seconds.
# Python packages come from uv.lock (one lock for the workspace): `uv sync --locked` into .venv, with a pinned uv
# bootstrapped into .cache/uv (pass UV=uv to use your own). After a dependency change: `$(UV) lock`.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMPS := .cache/stamps
UV_VERSION := 0.13.9
UV     ?= .cache/uv/bin/uv
UV_DEP := $(filter .cache/uv/bin/uv,$(UV))
PKGS   := llama-binding hardware placement synthetic streaming engine server cli
NATIVE := build/llama.cpp/.hypura-built
BINDING_SRC := $(wildcard packages/llama-binding/decl/*.h packages/llama-binding/csrc/*.c) \
               packages/llama-binding/build_native.py

.PHONY: build vendor native binding venv lock test test-all serve bench clean distclean

build: $(STAMPS)/binding $(STAMPS)/model

vendor: vendor/llama.cpp/.hypura-vendored
vendor/llama.cpp/.hypura-vendored: tools/vendor_llama.sh
	bash tools/vendor_llama.sh

native: $(NATIVE)
$(NATIVE): vendor/llama.cpp/.hypura-vendored tools/build_llama.sh
	bash tools/build_llama.sh
	@touch $@

.cache/uv/bin/uv:
	$(PYTHON) -m venv .cache/uv
	.cache/uv/bin/python -m pip install -q uv==$(UV_VERSION)

# Every workspace package editable, the dev group (pytest, clients) too, exactly as locked; --locked fails if a
# pyproject.toml changed without `uv lock`.
venv: $(STAMPS)/venv
$(STAMPS)/venv: uv.lock pyproject.toml $(foreach p,$(PKGS),packages/$(p)/pyproject.toml) | $(UV_DEP)
	@mkdir -p $(STAMPS)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --all-packages --python $(PYTHON) --quiet
	@touch $@

lock: | $(UV_DEP)
	$(UV) lock

binding: $(STAMPS)/binding
$(STAMPS)/binding: $(NATIVE) $(STAMPS)/venv $(BINDING_SRC)
	$(VPY) packages/llama-binding/build_native.py
	@touch $@

# The embedded default model, assembled once into the user cache directory and sha256-checked.
$(STAMPS)/model: $(STAMPS)/venv
	$(VPY) -c "from hypura_engine.registry import default_model_path; print(default_model_path())"
	@touch $@

test: build
	$(VPY) -m pytest -q -m "not gpu and not slow" $(PYTEST_ARGS)

test-all: build
	$(VPY) -m pytest -q $(PYTEST_ARGS)

serve: build
	$(VENV)/bin/hypura serve

clean:
	rm -rf build $(STAMPS)

distclean: clean
	rm -rf $(VENV) vendor/llama.cpp .cache
