# Thin wrapper over Meson. `make run` and `make test` are the README's two commands.
BUILD ?= build
ASAN_BUILD ?= build-asan
PREFIX ?= /usr/local

.PHONY: all deps run test test-unit test-asan test-integration test-sdk bench install image clean fuzz

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)
	@ln -sf src/daemon/hutchd $(BUILD)/hutchd; ln -sf src/cli/hutch $(BUILD)/hutch; ln -sf src/init/hutch-init $(BUILD)/hutch-init; ln -sf src/proxy/hutch-proxy $(BUILD)/hutch-proxy; ln -sf src/ingress/hutch-ingress $(BUILD)/hutch-ingress; ln -sf src/ssh/hutch-ssh $(BUILD)/hutch-ssh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false

deps:
	@bash scripts/deps.sh

image: all
	@bash scripts/build-image.sh

run: deps all image
	@bash scripts/run.sh

test: deps all image
	@bash scripts/test.sh

test-unit: all
	meson test -C $(BUILD) --print-errorlogs

test-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	meson test -C $(ASAN_BUILD) --print-errorlogs

# libFuzzer targets (docs/fuzzing.md), FUZZ_SECONDS each; `make test` runs them briefly.
FUZZ_SECONDS ?= 300
fuzz:
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

bench: deps all image
	@bash bench/run.sh

install: deps all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec/hutch $(DESTDIR)/etc/systemd/system
	install -m 0755 $(BUILD)/hutchd $(BUILD)/hutch $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(BUILD)/hutch-init $(BUILD)/hutch-proxy $(BUILD)/hutch-ssh $(DESTDIR)$(PREFIX)/libexec/hutch/
	install -m 0644 scripts/hutchd.service $(DESTDIR)/etc/systemd/system/hutchd.service

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
