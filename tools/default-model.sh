#!/usr/bin/env bash
# default-model.sh DIR: makes sure DIR holds a model `loramux serve` can load (`make run` calls
# it with models/default).
#
#   1. DIR already exists: it is used as it is (whatever the user put there).
#   2. Otherwise SmolLM2-135M-Instruct (Apache-2.0, Hugging Face layout, bf16, 257 MiB) is
#      downloaded at a pinned revision and every file is checked against its pinned size and
#      sha256 below; any failure discards the download.
#   3. When that is impossible (offline, huggingface.co unreachable, a sum that does not match),
#      `loramux synth-model --shape smollm-135m` writes a model of the same shape with random
#      weights and SmolLM's real tokenizer: the server works and answers every request, but
#      its text is meaningless. The log says so, and so does DIR/SYNTHETIC.txt, so that a
#      later run that finds DIR can say it again.
#
# Either way DIR appears only when complete: files go to a temporary sibling directory that
# is renamed into place, so an interrupted run leaves nothing that looks like a model.
#
# Environment:
#   LORAMUX_BIN        the loramux binary (default: build/loramux of this checkout)
#   LORAMUX_FIXTURES   where synth-model finds SmolLM's tokenizer (default: ../shared/fixtures
#                      next to this checkout)
#   HF_ENDPOINT        Hugging Face mirror (default https://huggingface.co)
#   LORAMUX_OFFLINE=1  (or HF_HUB_OFFLINE=1) skip the download, go straight to step 3
#
# Exit status: 0 when DIR holds a model, 1 when even the synthetic model could not be made.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LORAMUX_BIN:-$ROOT/build/loramux}
FIXTURES=${LORAMUX_FIXTURES:-$ROOT/../shared/fixtures}
ENDPOINT=${HF_ENDPOINT:-https://huggingface.co}
TMP=""  # the directory being filled; removed at exit unless renamed into place

REPO=HuggingFaceTB/SmolLM2-135M-Instruct
# The revision and sums are pinned together: a file may change from one revision to the next, so
# the download names this commit, never "main".
REV=12fd25f77366fa6b3b4b768ec3050bf629380bac
# name, size in bytes, sha256. Where each sum comes from:
# - model.safetensors is stored with Git LFS, whose pointer file records "oid sha256:<sum>" and
#   "size": that is Hugging Face's own published sum of the file's bytes. The value below is that
#   oid as copied by several independent public projects that pin this revision (it was not read
#   off huggingface.co from here: this machine cannot reach it).
# - The five small JSON files are plain git blobs on the Hub; what the Hub publishes for them is
#   the git blob id (sha1 of "blob <size>\0" + content), not a sha256. Their sha256 sums below
#   are the values that the same public projects computed from the downloaded bytes, all of them
#   agreeing. tokenizer.json and special_tokens_map.json were also checked here: the bytes of
#   SmolLM-135M-Instruct's tokenizer in ../shared/fixtures (same files, same sizes) hash to
#   exactly these sums. config.json, generation_config.json and tokenizer_config.json could not
#   be checked from here.
FILES=(
    "config.json 861 8eb740e8bbe4cff95ea7b4588d17a2432deb16e8075bc5828ff7ba9be94d982a"
    "generation_config.json 132 87b916edaaab66b3899b9d0dd0752727dff6666686da0504d89ae0a6e055a013"
    "special_tokens_map.json 655 2b7379f3ae813529281a5c602bc5a11c1d4e0a99107aaa597fe936c1e813ca52"
    "tokenizer_config.json 3764 4ec77d44f62efeb38d7e044a1db318f6a939438425312dfa333b8382dbad98df"
    "tokenizer.json 2104556 9ca9acddb6525a194ec8ac7a87f24fbba7232a9a15ffa1af0c1224fcd888e47c"
    "model.safetensors 269060552 5af571cbf074e6d21a03528d2330792e532ca608f24ac70a143f6b369968ab8c"
)

log() { printf 'default-model: %s\n' "$*" >&2; }

# ---- download ----

# fetch URL FILE: one HTTP GET to FILE; nonzero on any failure. curl or wget when present, else
# Python's urllib (python3 is there after `make deps`; a fresh Debian 12 may lack curl).
fetch() {
    if command -v curl >/dev/null; then
        curl -fsSL --connect-timeout 10 --retry 2 -o "$2" "$1"
    elif command -v wget >/dev/null; then
        wget -q --timeout=10 --tries=2 -O "$2" "$1"
    else
        python3 -c 'import sys, urllib.request
urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
    fi
}

# download DIR: fetches and checks every file into DIR; nonzero, with a log line naming the
# file, on the first failure.
download() {
    local dir=$1 entry name size sum got
    for entry in "${FILES[@]}"; do
        read -r name size sum <<<"$entry"
        log "downloading $REPO@${REV:0:8} $name ($size bytes)"
        if ! fetch "$ENDPOINT/$REPO/resolve/$REV/$name" "$dir/$name"; then
            log "$name: download failed ($ENDPOINT unreachable or offline?)"
            return 1
        fi
        got=$(stat -c %s "$dir/$name")
        if [ "$got" != "$size" ]; then
            log "$name: $got bytes, expected $size"
            return 1
        fi
        got=$(sha256sum "$dir/$name" | cut -d' ' -f1)
        if [ "$got" != "$sum" ]; then
            log "$name: sha256 $got, expected $sum"
            return 1
        fi
    done
}

# ---- synthetic stand-in ----

warn_synthetic() {
    log "WARNING: $1 is a SYNTHETIC model (SmolLM-135M's shape and real tokenizer, RANDOM"
    log "WARNING: weights): the server works, but all the text it generates is MEANINGLESS."
    log "WARNING: For real output put a model in Hugging Face layout in $1, or delete it and"
    log "WARNING: run again with access to huggingface.co."
}

synthesize() {
    local dir=$1
    if [ ! -x "$BIN" ]; then
        log "$BIN is not built; run make first"
        return 1
    fi
    log "writing a synthetic SmolLM-135M-shaped model (bf16, about 270 MB; tokenizer from" \
        "$FIXTURES)"
    LORAMUX_FIXTURES=$FIXTURES "$BIN" synth-model --shape smollm-135m --dtype bf16 \
        --out "$dir" >/dev/null || return 1
    cat >"$dir/SYNTHETIC.txt" <<EOF
Written by tools/default-model.sh with \`loramux synth-model --shape smollm-135m --dtype bf16\`
because $REPO could not be downloaded.
Random weights: the text this model generates is meaningless. Delete this directory and run
\`make run\` again with access to huggingface.co to get the real model.
EOF
}

# ---- main ----

main() {
    if [ $# -ne 1 ]; then
        echo "usage: $0 DIR" >&2
        exit 2
    fi
    local dir=${1%/}
    if [ -e "$dir" ]; then
        if [ -f "$dir/SYNTHETIC.txt" ]; then
            warn_synthetic "$dir"
        else
            log "using $dir"
        fi
        exit 0
    fi
    mkdir -p "$(dirname "$dir")"
    TMP=$(mktemp -d "$dir.partial.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT

    if [ "${LORAMUX_OFFLINE:-0}" = 1 ] || [ "${HF_HUB_OFFLINE:-0}" = 1 ]; then
        log "offline (LORAMUX_OFFLINE or HF_HUB_OFFLINE set): not downloading $REPO"
    elif download "$TMP"; then
        echo "Downloaded $REPO at revision $REV; every file matched its pinned sha256." \
            >"$TMP/SOURCE.txt"
        mv "$TMP" "$dir"
        log "$REPO ready in $dir"
        exit 0
    else
        log "could not get $REPO; falling back to a synthetic model"
        rm -rf "$TMP" && mkdir "$TMP"
    fi

    if ! synthesize "$TMP"; then
        log "could not write the synthetic model either (LORAMUX_FIXTURES=$FIXTURES)"
        exit 1
    fi
    mv "$TMP" "$dir"
    warn_synthetic "$dir"
}

main "$@"
