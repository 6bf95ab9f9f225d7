# superopt — every target bootstraps .venv from nothing (python3 -m venv + pip install -e .[dev]).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out
DEMO_MODEL ?= squeezenet

.PHONY: install demo test test-all bench rules lint wheel-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	@touch $(STAMP)

# Build a zoo model, optimize it on the CPU, print the before/after table, write a report.
demo: install
	@mkdir -p $(OUT)
	$(PY) -m superopt zoo build $(DEMO_MODEL) -o $(OUT)/$(DEMO_MODEL).onnx
	$(PY) -m superopt optimize $(OUT)/$(DEMO_MODEL).onnx $(OUT)/$(DEMO_MODEL).opt.onnx \
		--device cpu --report $(OUT)/report.html --json $(OUT)/report.json
	@echo "report: $(OUT)/report.html"

# The suite CI runs (slow tests excluded; `make test-all` runs them too).
test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ''

bench: install
	$(PY) -m superopt bench --device cpu --out benchmarks/results/cpu.md

# Regenerate and re-verify the shipped rule database: TASO's op set at k=3, plus the rank-3
# MatMul preset (transformer/RNN activations times 2-D weights), plus the op configurations of
# the zoo models at k=2 (`generate --from`: their strides, pads, groups, kernel shapes and
# activations), and the hand-written, proved families of rules_db/handwritten.json (re-proved
# here), joined into one file, then sealed (meta.rules_sha256: the optimizer trusts its proofs
# only while that digest holds).
ZOO_MODELS ?= resnet50 resnext50 inception_v3 squeezenet bert nasnet_a nasrnn
rules: install
	@mkdir -p $(OUT)/zoo
	$(PY) -m superopt generate -o $(OUT)/rules-default.json
	$(PY) -m superopt generate --ops matmul3d -o $(OUT)/rules-matmul3d.json
	for m in $(ZOO_MODELS); do $(PY) -m superopt zoo build $$m -q -o $(OUT)/zoo/$$m.onnx || exit 1; done
	$(PY) -m superopt generate --from $(addprefix $(OUT)/zoo/,$(addsuffix .onnx,$(ZOO_MODELS))) \
		--max-ops 2 -o $(OUT)/rules-zoo.json
	$(PY) tools/handwritten_families.py
	$(PY) -m superopt verify rules_db/handwritten.json -o $(OUT)/rules-handwritten.json
	$(PY) -m superopt rules merge $(OUT)/rules-default.json $(OUT)/rules-matmul3d.json \
		$(OUT)/rules-zoo.json $(OUT)/rules-handwritten.json -o rules_db/rules.json
	$(PY) -m superopt rules seal rules_db/rules.json

# ruff, then the import contracts (layers, no cycles) of pyproject.toml's [tool.importlinter].
lint: install
	$(PY) -m ruff check superopt generator verifier search cost_model tests benchmarks tools
	$(PY) tools/lint_imports.py

# Build a wheel and install it into a fresh venv outside the checkout; optimize a zoo model there.
wheel-check: install
	bash benchmarks/wheel_check.sh

clean:
	rm -rf $(OUT) build dist *.egg-info

# Differential fuzzing (superopt.testing.fuzz): 5,000 random models (seed fixed and printed),
# every match of every rule and the unguarded search run against the original in ONNX Runtime;
# prints the summary and fails on any difference. FUZZ_ARGS adds options (--minimize, --out).
.PHONY: fuzz
fuzz: install
	$(PY) -m superopt.testing.fuzz --cases 5000 --seed 1 $(FUZZ_ARGS)
