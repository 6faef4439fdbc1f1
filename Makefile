# Thin wrapper over Meson. `make run` and `make test` are the README's two commands.
BUILD ?= build
ASAN_BUILD ?= build-asan
PREFIX ?= /usr/local

.PHONY: all deps run test test-unit test-asan test-integration test-sdk bench install image vscode-layer clean fuzz dashboard

all: $(BUILD)/build.ninja dashboard
	ninja -C $(BUILD)
	@ln -sf src/daemon/hutchd $(BUILD)/hutchd; ln -sf src/cli/hutch $(BUILD)/hutch; ln -sf src/init/hutch-init $(BUILD)/hutch-init; ln -sf src/proxy/hutch-proxy $(BUILD)/hutch-proxy; ln -sf src/ingress/hutch-ingress $(BUILD)/hutch-ingress; ln -sf src/ssh/hutch-ssh $(BUILD)/hutch-ssh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false

# The web dashboard (docs/dashboard.md): plain ES modules and xterm.js from npm (pinned by
# src/dashboard/package-lock.json), copied into $(BUILD)/dashboard, which hutchd serves at /.
DASH = src/dashboard
DASH_FILES = $(DASH)/index.html $(DASH)/app.css $(DASH)/app.js $(DASH)/api.js $(DASH)/plot.js $(DASH)/term.js
dashboard: $(BUILD)/dashboard/index.html

$(DASH)/node_modules/.package-lock.json: $(DASH)/package-lock.json
	cd $(DASH) && npm ci --no-audit --no-fund --ignore-scripts

$(BUILD)/dashboard/index.html: $(DASH_FILES) $(DASH)/node_modules/.package-lock.json
	rm -rf $(BUILD)/dashboard.new && mkdir -p $(BUILD)/dashboard.new
	install -m 0644 $(DASH_FILES) $(BUILD)/dashboard.new/
	install -m 0644 $(DASH)/node_modules/@xterm/xterm/lib/xterm.mjs $(DASH)/node_modules/@xterm/xterm/css/xterm.css $(BUILD)/dashboard.new/
	install -m 0644 $(DASH)/node_modules/@xterm/xterm/LICENSE $(BUILD)/dashboard.new/xterm-license.txt
	rm -rf $(BUILD)/dashboard && mv $(BUILD)/dashboard.new $(BUILD)/dashboard

deps:
	@bash scripts/deps.sh

image: all
	@bash scripts/build-image.sh
	@bash scripts/build-vscode-layer.sh

# VS Code in sandboxes (docs/expose.md): code-server + Node.js 20, once per machine.
vscode-layer:
	@bash scripts/build-vscode-layer.sh

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
	install -d $(DESTDIR)$(PREFIX)/share/hutch/dashboard
	install -m 0644 $(BUILD)/dashboard/* $(DESTDIR)$(PREFIX)/share/hutch/dashboard/

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
