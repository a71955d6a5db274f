#!/usr/bin/env bash
# Runs every fuzz target (or the ones named after SECONDS) for SECONDS
# each, one after another, seeding fuzz/corpus/<target>/ on the first run
# from the test data in codecs/tests/data (and from the optional external
# corpora, $ANYFRAME_CORPORA or shared/corpora beside the repository, when
# present). Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`); nightly features come from
# RUSTC_BOOTSTRAP=1 on a stable toolchain.
#
#   fuzz/run.sh 600                # every target, 10 minutes each
#   fuzz/run.sh 60 json cbor       # just these
#
# Crashes land in fuzz/artifacts/<target>/; each run's log, with libFuzzer's
# "Done N runs in S second(s)" line, in fuzz/artifacts/logs/<target>.log.
set -euo pipefail

secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
data=$repo/codecs/tests/data
corpora=${ANYFRAME_CORPORA:-$repo/../shared/corpora}
all=(json cbor line packstring netstring engine chunk tls_detect regex)
targets=("${@:-${all[@]}}")

export RUSTC_BOOTSTRAP=1
cd "$here"
cargo fuzz build -O

seed() {
    # seed TARGET HEADER_HEX FILE... : copies each file behind a config
    # header (see src/lib.rs for the input layout).
    local t=$1 hdr=$2
    shift 2
    mkdir -p "corpus/$t"
    for f in "$@"; do
        [ -f "$f" ] || continue
        { printf "%b" "$hdr"; cat "$f"; } >"corpus/$t/seed-$(basename "$f")-${hdr//\\/}"
    done
}

seed_hex_json() {
    # seed_hex_json TARGET HEADER_HEX FILE.json : every "hex" entry.
    local t=$1 hdr=$2 file=$3
    [ -f "$file" ] || return 0
    command -v python3 >/dev/null || { echo "no python3: $t not seeded from $file"; return 0; }
    mkdir -p "corpus/$t"
    python3 - "$file" "corpus/$t" "$hdr" <<'PY'
import json, sys
src, out, hdr = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
for i, e in enumerate(json.load(open(src))):
    open(f"{out}/seed-{src.rsplit('/', 1)[-1]}-{i}", "wb").write(hdr + bytes.fromhex(e["hex"]))
PY
}

seed_hex_tsv() {
    # seed_hex_tsv TARGET HEADER_HEX FILE.tsv : the hex in each line's first column.
    local t=$1 hdr=$2 file=$3
    [ -f "$file" ] || return 0
    command -v python3 >/dev/null || { echo "no python3: $t not seeded from $file"; return 0; }
    mkdir -p "corpus/$t"
    python3 - "$file" "corpus/$t" "$hdr" <<'PY'
import sys
src, out, hdr = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
rows = [l.split("\t")[0] for l in open(src) if l.strip() and not l.startswith("#")]
for i, h in enumerate(rows):
    open(f"{out}/seed-{src.rsplit('/', 1)[-1]}-{sys.argv[3]}-{i}", "wb").write(hdr + bytes.fromhex(h))
PY
}

seed_hex_files() {
    # seed_hex_files TARGET HEADER_HEX FILE.hex... : each file's hex dump.
    local t=$1 hdr=$2
    shift 2
    command -v python3 >/dev/null || { echo "no python3: $t not seeded"; return 0; }
    mkdir -p "corpus/$t"
    for f in "$@"; do
        [ -f "$f" ] || continue
        python3 -c 'import sys; open(sys.argv[2], "wb").write(bytes.fromhex(sys.argv[3]) + bytes.fromhex("".join(open(sys.argv[1]).read().split())))' \
            "$f" "corpus/$t/seed-$(basename "$f")" "$hdr"
    done
}

[ -d corpus/json ] || {
    seed json '\x3f\x00' "$data"/json/test_parsing/*.json
    seed json '\x3f\x02\x00\x06' "$data"/json/test_parsing/y_*.json
    seed json '\x1b\x00' "$data"/json/test_parsing/n_*.json
}
[ -d corpus/cbor ] || {
    seed_hex_tsv cbor 3f00 "$data/cbor/rfc8949-appendix-a.tsv"
    seed_hex_tsv cbor 1a020006 "$data/cbor/rfc8949-appendix-a.tsv"
    # Not redistributable, so only when the external corpora are present.
    if [ -d "$corpora" ]; then seed_hex_json cbor 3f00 "$corpora/cbor/fail.json"; fi
}
[ -d corpus/tls_detect ] || {
    seed_hex_files tls_detect 0000 "$data"/tls/*.hex
    seed_hex_files tls_detect 010203 "$data"/tls/*.hex
}
[ -d corpus/line ] || seed line '\x38\x00' "$data"/json/test_parsing/y_*.json
[ -d corpus/regex ] || seed regex '\x1b\x00' "$data"/json/test_parsing/y_*.json
# Hand-made seeds for the byte-framing codecs and the engine.
mkdir -p corpus/line corpus/netstring corpus/packstring corpus/chunk corpus/regex corpus/engine
printf '\x38\x01\x02GET / HTTP/1.1\r\nHost: a\r\n\r\n' >corpus/line/hand-http
printf '\x7b\x00abc\nd\re\r\r\nXYXYXYZ;;,,\n' >corpus/line/hand-mixed
printf '\x07\x01\x02' >corpus/netstring/hand-empty
printf '\x07\x00''5:hello,0:,3:abcX3:def,' >corpus/netstring/hand-ae
printf '\x02\x02\x00\x04' >corpus/netstring/hand-bad
printf '\x39\x00\x00\x05hello\x00\x00' >corpus/packstring/hand-n
printf '\x3d\x01\x00\x81\x00\x05hello\x7f' >corpus/packstring/hand-ber
printf '\x3d\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01' >corpus/packstring/hand-ber-overflow
printf '\x03\x01\x02abcdefghij' >corpus/chunk/hand
printf '\x00\x00GET / HTTP/1.0\r\n\r\nbody\x00' >corpus/regex/hand-http
printf '\x02\x00xxEN''D1END' >corpus/regex/hand-skip
printf '\x00\x05\x00\x05hello\x02\x05hello\x04\x03abc\x05\x03abc\x06\x02hi\x01\x02\x03\x04\x05' >corpus/engine/hand
printf '\x0f\x08\x1c\x05hello\x0b\x03abc\x04\x04abcd\x0c\x03xyz\x03\x02\x41\x42\x81q\x02\x07\x05\x03' >corpus/engine/hand-cut
# Engine model cases (first byte with the top bit set; see engine_model.rs).
printf '\x80\x00\x00\x00\x00\x00\x04\x20\x00\x05\x01\x03\x06' >corpus/engine/model-inline
printf '\x80\x05\x00\x00\x03\x00\x04\x20\x01\x02\x03\x08\x19\x17' >corpus/engine/model-spawned-timer

mkdir -p artifacts/logs
# Fork mode with one job keeps going after a crash (each one is saved in
# fuzz/artifacts/<target>/), so one run covers the whole time budget.
status=0
for t in "${targets[@]}"; do
    mkdir -p "artifacts/$t"
    before=$(ls "artifacts/$t" | wc -l)
    echo "== $t: ${secs}s"
    # Inputs up to 16 KiB; a single input over 10 s is a hang.
    cargo fuzz run -O "$t" "corpus/$t" -- \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=4096 \
        >"artifacts/logs/$t.log" 2>&1 || true
    # The last progress line: "#<execs>: cov: ... crash: <n> time: <s>s".
    grep -E '^#[0-9]+: ' "artifacts/logs/$t.log" | tail -1
    after=$(ls "artifacts/$t" | wc -l)
    if [ "$after" -gt "$before" ]; then
        echo "!! $t: $((after - before)) new crash/hang/oom inputs in fuzz/artifacts/$t/"
        status=1
    fi
done
exit $status
