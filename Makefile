# SPDX-License-Identifier: GPL-2.0
#
# blksnap: the two commands users need are `make demo` and `make check`;
# the other targets are their steps.  Kbuild reads ./Kbuild, not this file,
# when the kernel's build system descends here with M=.

TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BUILD := $(TOP)/build
export PATH := $(HOME)/.cargo/bin:$(PATH)

MUSL_TARGET := x86_64-unknown-linux-musl
TOOL := $(TOP)/tools/target/$(MUSL_TARGET)/release/blksnap
SELFTESTS := $(BUILD)/selftests
SELFTEST_C := $(wildcard $(TOP)/tests/selftests/*.c)
SELFTEST_SH := $(wildcard $(TOP)/tests/selftests/*.sh)

# KDIR: the kernel tree to build the module against.  By default the
# project's own patched kernel, built (or found in the cache) first.
ifeq ($(origin KDIR),undefined)
KDIR = $(shell $(TOP)/scripts/build-kernel.sh --kdir)
KERNEL_DEP := kernel
endif

.PHONY: all demo check deps kernel module tool selftests host-test vm-test vm-boots persist-check \
	vm-shell fuzz soak bench packages package-check install clean help

all: module tool

help:
	@echo "make demo    build everything and show blksnap working in QEMU"
	@echo "make check   build everything, run every test, print 'N passed, M failed'"
	@echo "steps: deps kernel module tool selftests host-test vm-test vm-boots vm-shell clean"
	@echo "more: fuzz N=<calls> [SEED=<seed>] (the ioctl fuzzer alone),"
	@echo "      soak MINUTES=<minutes> (the integrity soak alone),"
	@echo "      persist-check (reboot.sh with 20 power cuts; vm-boots CUTS=<n> for n)"
	@echo "      bench [TRIALS=3] (blksnap vs its physical limits, dm-snapshot and"
	@echo "      dm-thin on three disk models; writes Documentation/performance.rst)"
	@echo "install: the tool, its manual page and completions ([DESTDIR=] [PREFIX=/usr/local])"
	@echo "packaging: packages (Debian packages in build/packages/),"
	@echo "           package-check (install and run them in a Debian 12 VM, as root)"
	@echo "options: KDIR=<kernel tree> (module against another kernel), T=<test> (vm-test, vm-boots)"

demo:
	@$(TOP)/scripts/demo.sh

check:
	@$(TOP)/scripts/check.sh

bench:
	@$(TOP)/scripts/bench.sh

PREFIX ?= /usr/local
# The tool, its manual page and shell completions (the module comes from
# DKMS or make module; see Documentation/packaging.rst).
install: tool
	install -D -m 0755 $(TOOL) $(DESTDIR)$(PREFIX)/sbin/blksnap
	install -d $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	$(TOOL) generate man --dir $(DESTDIR)$(PREFIX)/share/man/man8
	gzip -9nf $(DESTDIR)$(PREFIX)/share/man/man8/blksnap*.8
	$(TOOL) generate bash >$(DESTDIR)$(PREFIX)/share/bash-completion/completions/blksnap
	$(TOOL) generate zsh >$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_blksnap
	$(TOOL) generate fish >$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/blksnap.fish

packages:
	@$(TOP)/scripts/install-deps.sh --packaging
	@$(TOP)/scripts/package/build-packages.sh

package-check:
	@$(TOP)/scripts/package/package-check.sh

deps:
	@$(TOP)/scripts/install-deps.sh

kernel: deps
	@$(TOP)/scripts/build-kernel.sh >/dev/null

module: $(KERNEL_DEP)
	$(MAKE) -C $(KDIR) M=$(TOP) LLVM=1 modules

tool:
	cd $(TOP)/tools && cargo build --release --locked --target $(MUSL_TARGET)

selftests: $(KERNEL_DEP)
	@mkdir -p $(SELFTESTS)
	@for c in $(SELFTEST_C); do \
		n=$$(basename $$c .c); \
		gcc -static -O2 -Wall -Werror -D_GNU_SOURCE \
			-I$(TOP)/include/uapi -I$(KDIR)/tools/testing/selftests \
			-o $(SELFTESTS)/$$n $$c -lpthread || exit 1; \
	done
	@cp $(SELFTEST_SH) $(SELFTESTS)/

host-test:
	$(TOP)/tests/abi/check.sh
	cd $(TOP)/tools && cargo test --locked

# T=<name> runs one selftest (plus the final leak check).
vm-test: module tool selftests
	@KERNEL=$(KDIR)/arch/x86/boot/bzImage MODULE=$(TOP)/blksnap.ko TOOL=$(TOOL) \
		SELFTESTS=$(SELFTESTS) OUT=$(BUILD)/vm $(TOP)/tests/vm/run.sh test $(T)

# T=<test>: a selftest that runs over several boots of the same disks
# (tests/selftests/reboot.sh: reboots and power cuts, CUTS of them, 3
# unless given).
CUTS ?= 3
vm-boots: module tool selftests
	@KERNEL=$(KDIR)/arch/x86/boot/bzImage MODULE=$(TOP)/blksnap.ko TOOL=$(TOOL) \
		SELFTESTS=$(SELFTESTS) OUT=$(BUILD)/$(or $(BOOTS_OUT),boots) VM_TIMEOUT=1800 \
		BOOTS_CUTS=$(CUTS) BOOTS_MAX=$$(($(CUTS) + 4)) \
		$(TOP)/tests/vm/run.sh boots $(or $(T),reboot.sh)

# The long persistence run: reboot.sh with twenty power cuts at random
# moments (about 25 boots).
persist-check:
	@$(MAKE) --no-print-directory vm-boots CUTS=20 BOOTS_OUT=persist-check

# N=<calls> [SEED=<seed>]: the ioctl fuzzer alone, for as long as asked.
fuzz: module tool selftests
	@KERNEL=$(KDIR)/arch/x86/boot/bzImage MODULE=$(TOP)/blksnap.ko TOOL=$(TOOL) \
		SELFTESTS=$(SELFTESTS) OUT=$(BUILD)/fuzz FUZZ_N=$(N) FUZZ_SEED=$(SEED) \
		$(TOP)/tests/vm/run.sh test fuzz

# MINUTES=<minutes>: the integrity soak alone, for as long as asked.
soak: module tool selftests
	@KERNEL=$(KDIR)/arch/x86/boot/bzImage MODULE=$(TOP)/blksnap.ko TOOL=$(TOOL) \
		SELFTESTS=$(SELFTESTS) OUT=$(BUILD)/soak SOAK_MINUTES=$(MINUTES) \
		VM_TIMEOUT=$$(( $${MINUTES:-2} * 60 + 1800 )) $(TOP)/tests/vm/run.sh test soak

vm-shell: module tool selftests
	@KERNEL=$(KDIR)/arch/x86/boot/bzImage MODULE=$(TOP)/blksnap.ko TOOL=$(TOOL) \
		SELFTESTS=$(SELFTESTS) OUT=$(BUILD)/vm-shell $(TOP)/tests/vm/run.sh shell

clean:
	-$(MAKE) -C $(KDIR) M=$(TOP) LLVM=1 clean
	rm -rf $(BUILD)
	cd $(TOP)/tools && cargo clean
