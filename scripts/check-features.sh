#!/bin/sh
# Checks that both crates build with every combination of their features.
#
#   scripts/check-features.sh
#
# The libraries go through the whole feature powerset (`anyframe` has five
# features, `anyframe-codecs` three: 32 and 8 builds, without dev-dependencies
# so a missing `dep:` shows). Examples, tests and benches go through each
# feature alone, none and all: their `required-features` must keep every
# target that needs a feature out of the builds that lack it.
#
# Needs cargo-hack (`cargo install cargo-hack --locked`).
set -eu
cd "$(dirname "$0")/.."

if ! cargo hack --version >/dev/null 2>&1; then
    echo "check-features: cargo-hack is missing; cargo install cargo-hack --locked" >&2
    exit 1
fi

for pkg in anyframe-codecs anyframe; do
    cargo hack check -p "$pkg" --feature-powerset --no-dev-deps
    cargo hack check -p "$pkg" --each-feature --all-targets
done
