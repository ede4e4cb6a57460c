#!/usr/bin/env bash
# Where a message's CPU goes in `campaign send --dry-run`: instructions per message counted by
# valgrind's callgrind (repeatable on a shared, noisy machine, unlike wall time), one worker
# thread, over the run segmented from a 10k-row export with the fixture campaign (as
# bench/render.sh does with 100k). See BENCHMARKS.md, section "Render".
#
#   bench/render-profile.sh
#   CAMPAIGN_BIN=/tmp/new/campaign CAMPAIGN_BASELINE=/tmp/old/campaign bench/render-profile.sh
#
# Environment:
#   ROWS  data rows of the generated export (default 10000: ~40 s per binary under callgrind)
#   CAMPAIGN_BIN, CAMPAIGN_GEN, SEED  as in bench/render.sh
#   CAMPAIGN_BASELINE  a second binary, profiled the same way, for a before/after table
#
# Prints total instructions per message and the inclusive share of the parts of a message (a
# part is the functions named in the table, with everything they call). Installs valgrind
# with apt-get when missing. callgrind's CPU model has no SHA-NI, so SHA-256 (the chunk check
# and the unsubscribe token's HMAC) counts as the portable code, ~10k instructions a message
# more than the hardware runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROWS=${ROWS:-10000}
FIXTURE_TOML=fixtures/campaign.toml

if ! command -v valgrind >/dev/null; then
    log "installing valgrind"
    apt_install valgrind
fi
build
ensure_data "$ROWS"
f=$(data_file "$ROWS")
segment_run "$f" "$FIXTURE_TOML" "$WORK/run"
donors=$(python3 -c 'import json,sys; print(sum(s["rows"] for s in json.load(open(sys.argv[1]))["segments"]))' "$WORK/run/manifest.json")

# profile NAME BIN: callgrind's output in $WORK/NAME.cg, its annotation in $WORK/NAME.txt
profile() {
    log "profiling $1 ($2)"
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$1.cg" \
        "$2" send "$WORK/run" --dry-run --preview 0 --quiet --concurrency 1 >/dev/null 2>"$WORK/$1.err"
    callgrind_annotate --inclusive=yes "$WORK/$1.cg" >"$WORK/$1.txt" 2>/dev/null
}
profile campaign "$CAMPAIGN"
names=(campaign)
if [[ -n ${CAMPAIGN_BASELINE:-} ]]; then
    profile baseline "$(given_binary CAMPAIGN_BASELINE "$CAMPAIGN_BASELINE")"
    names+=(baseline)
fi

machine_header "campaign send --dry-run: instructions per message (callgrind, 1 thread)"
echo "# $f ($ROWS rows) segmented with $FIXTURE_TOML: $donors donors"
echo
python3 - "$donors" "${names[@]/#/$WORK/}" <<'PY'
import re, sys
donors = int(sys.argv[1])
files = sys.argv[2:]
# (label, pattern of a function's line in callgrind_annotate's inclusive listing, whether
# to add up every line that matches rather than take the first, the costliest)
parts = [
    ("whole run (incl. start-up)", r"PROGRAM TOTALS", False),
    ("one message: Preparer::prepare", r"prepare\.rs:campaign::prepare::Preparer::prepare_as \[", False),
    ("  templates (TemplateSet::render)", r"campaign::render::TemplateSet::render \[", False),
    ("    of which minijinja (Template::_render)", r"minijinja::template::Template::_render \[", False),
    ("  message (Composer::compose)", r"campaign::message::composer::Composer::compose \[", False),
    ("    bodies (body::write_part; before: encode_body)", r"campaign::message::body::(write_part|encode_body) \[", False),
    ("    lettre's builder (before)", r"lettre::message::(MessageBuilder::(multipart|body)|Message::formatted) \[", True),
    ("chunk reading (run::read_chunk)", r"campaign::run::read_chunk \[", False),
    ("SHA-256, everywhere (chunk check, token HMAC)", r"sha2::sha256::compress256 \[", False),
    ("malloc + free, everywhere", r"malloc\.c:(malloc|free) \[", True),
]
def load(path):
    lines = open(path + ".txt").read().splitlines()
    out = {}
    for label, pat, add_up in parts:
        total = 0
        for line in lines:
            m = re.match(r"\s*([\d,]+) \(", line)
            if m and re.search(pat, line):
                total += int(m.group(1).replace(",", ""))
                if not add_up:
                    break
        out[label] = total / donors
    return out
cols = [load(f) for f in files]
names = [f.rsplit("/", 1)[1] for f in files]
print("| part | " + " | ".join(f"{n}: instructions/message" for n in names) + (" | campaign/baseline |" if len(cols) == 2 else " |"))
print("|---|" + "---:|" * len(cols) + ("---:|" if len(cols) == 2 else ""))
for label, _, _ in parts:
    vals = [c[label] for c in cols]
    ratio = f" {vals[0] / vals[1]:.2f} |" if len(cols) == 2 and vals[1] else (" |" if len(cols) == 2 else "")
    print(f"| {label} | " + " | ".join(f"{v:,.0f}" for v in vals) + " |" + ratio)
PY
