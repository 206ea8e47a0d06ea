# purchase-guard. `make run` and `make test` work from a fresh clone: they build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
DATA ?= $(abspath ../shared/data)
export PURCHASE_GUARD_DATA_DIR ?= $(DATA)

.PHONY: venv chromium console console-screenshots run test unit integration lint typecheck protos protos-check eval eval-households eval-adaptation eval-voice-study voice-models eval-broadcast broadcast-variants eval-answers digits-model bench bench-cores bench-decide bench-events bench-fleet replay trust model clean

venv: $(STAMP)

# torch is pinned in pyproject (CPU build from local disk). resemblyzer is installed without
# its dependencies: we only need the GE2E weights file it carries, not librosa or webrtcvad.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev,ecapa]'
	$(BIN)/pip install --no-deps resemblyzer==0.1.4
	# speechbrain's metadata requires torchaudio, which would replace the CPU torch; its real
	# needs are in the [ecapa] extra and voice/_speechbrain_compat.py covers the import.
	$(BIN)/pip install --no-deps speechbrain==1.1.2
	$(MAKE) chromium
	touch $(STAMP)

# The console's browser suite (tests/console) drives Debian's Chromium through Playwright, which
# never downloads a browser of its own (`playwright install` is not used). Installed once, when
# missing; CI runs as root.
chromium:
	@if ! dpkg -s chromium chromium-driver >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "tests/console needs Debian's chromium: sudo apt-get install -y chromium chromium-driver" >&2; exit 1; \
	  fi; \
	  echo "installing Debian's chromium (tests/console)" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

run: $(STAMP)
	$(BIN)/purchase-guard serve

# The parents' web console against the guard `make run` serves (docs/console.md).
console: $(STAMP)
	$(BIN)/purchase-guard console

# Runs the browser suite, which writes a screenshot of each page to reports/console/, and copies
# them to docs/console/ (committed).
console-screenshots: $(STAMP) chromium
	rm -rf reports/console
	$(PY) -m pytest -q tests/console
	mkdir -p docs/console
	cp reports/console/*.png docs/console/

test: $(STAMP) chromium
	$(PY) scripts/gen_protos.py --check
	$(BIN)/ruff check src tests scripts deploy
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

# k-fold over speakers, 95 % speaker-bootstrap intervals (docs/voice.md). Embeddings are cached
# (keyed by audio hash, VAD and encoder) so reruns take minutes, not the first run's ~15.
VOICE_CACHE ?= build/voice-cache
eval: $(STAMP)
	$(BIN)/purchase-guard eval speakers --data $(DATA) --out reports/eval --cache-dir $(VOICE_CACHE)

# Simulated households through the real guard over gRPC, k-fold over speakers: thresholds and
# child detector refitted per fold, households only from the held-out fold (docs/voice.md,
# "Households, end to end"). Shares the eval's unit cache; HOUSEHOLDS sets the size.
HOUSEHOLDS ?= 60
# Voiceprint adaptation (issue 19 item 5) by simulation on held-out speakers, k-fold as above.
eval-adaptation: $(STAMP)
	$(PY) scripts/eval_adaptation.py --data $(DATA) --out reports/adaptation --cache-dir $(VOICE_CACHE)

eval-households: $(STAMP)
	$(PY) scripts/eval_households.py --data $(DATA) --out reports/households --cache-dir $(VOICE_CACHE) \
		--households $(HOUSEHOLDS)

# The study behind docs/voice.md: every verification system and child-detector variant, both VADs.
eval-voice-study: $(STAMP)
	$(BIN)/purchase-guard eval speakers --data $(DATA) --out reports/eval-study --cache-dir $(VOICE_CACHE) \
		--compare --vad both --replicates 300

# Refit the shipped voice files (thresholds.json, backend_ge2e.json, child_ge2e.json, digit_print.json).
voice-models: $(STAMP)
	$(PY) scripts/calibrate_voice.py --data $(DATA) --cache-dir $(VOICE_CACHE) $(CALIBRATE_ARGS)
	$(PY) scripts/train_child_detector.py --data $(DATA) --cache-dir $(VOICE_CACHE) $(CHILD_ARGS)
	$(PY) scripts/fit_digit_print.py --data $(DATA) --out reports/voice

eval-broadcast: $(STAMP)
	$(PY) scripts/eval_broadcast.py --data $(DATA) --out reports/broadcast

# The answer content check (does the audio say the digits?), k-fold over speakers, and the
# pocketsphinx candidate it was chosen against (~20 min on two busy cores).
eval-answers: $(STAMP)
	$(PY) scripts/eval_answers.py --data $(DATA) --out reports/answers --psx 10
	$(PY) scripts/eval_attacks.py --data $(DATA) --out reports/answers

# Refits src/purchase_guard/voice/digits/digits_model.json + digits_bank.npz from ../shared/data.
digits-model: $(STAMP)
	$(PY) scripts/train_digits.py --data $(DATA)

# The fingerprint variant study behind docs/broadcast.md (tuning material only; ~15 min).
broadcast-variants: $(STAMP)
	$(PY) scripts/broadcast_variants.py --data $(DATA) --out reports/broadcast/variants.md

# Fetches the real ECAPA weights; only on a machine that can reach the model hub. The server
# itself never downloads anything: it loads this folder (PURCHASE_GUARD_ECAPA_MODEL_DIR).
ECAPA_DIR ?= models/spkrec-ecapa-voxceleb
ECAPA_REVISION ?= main
model: $(STAMP)
	$(PY) -c "from huggingface_hub import snapshot_download; snapshot_download('speechbrain/spkrec-ecapa-voxceleb', revision='$(ECAPA_REVISION)', local_dir='$(ECAPA_DIR)', allow_patterns=['hyperparams.yaml','embedding_model.ckpt','mean_var_norm_emb.ckpt','classifier.ckpt','label_encoder.txt'])"

replay: $(STAMP)
	$(BIN)/purchase-guard replay tests/scenarios --data $(DATA) --report reports/replay --junit reports/replay/junit.xml

trust: $(STAMP)
	$(PY) -m pytest -q tests/privacy tests/trust tests/attacks

bench: $(STAMP)
	$(PY) scripts/bench_evaluate.py --out reports/bench
	$(PY) scripts/bench_load.py --out reports/bench
	$(PY) scripts/bench_confirm.py --data $(DATA) --out reports/bench
	$(PY) scripts/bench_encoder.py --data $(DATA) --out reports/bench
	$(PY) scripts/bench_replay.py --data $(DATA) --out reports/bench
	$(MAKE) bench-decide bench-cores

# The no-audio part of Evaluate (verifier stubbed, fingerprints precomputed): p50/p99 and store
# round trips per decision on SQLite and PostgreSQL. Writes reports/bench/decide.json.
bench-decide: $(STAMP)
	$(PY) scripts/bench_decide.py --out reports/bench

# Replica throughput at concurrency 32 against the bare encoder run as the server runs it (its
# own processes, same threads and batching), per runtime and PURCHASE_GUARD_PROCESSES, in one
# run (~10-15 min on 2 cores). Writes reports/bench/cores.json.
bench-cores: $(STAMP)
	$(PY) scripts/bench_cores.py --data $(DATA) --out reports/bench

# Webhook delivery: sent, retried, dead-lettered, lost (must be 0), latency; with receiver failures
# and a SIGKILL of the guard. Writes reports/events/delivery.json.
bench-events: $(STAMP)
	$(PY) scripts/bench_events.py --out reports/events

# A national broadcast against the fleet window at 10k / 100k / 1M utterances in 10 minutes:
# rates from real prints of real speech, scale simulated (docs/broadcast.md). FLEET_SIZES to
# run fewer sizes.
FLEET_SIZES ?= 10000,100000,1000000
bench-fleet: $(STAMP)
	$(PY) scripts/bench_fleet.py --data $(DATA) --out reports/bench --sizes $(FLEET_SIZES)

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
