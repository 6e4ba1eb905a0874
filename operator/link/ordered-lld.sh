#!/bin/sh
# Links the operator with the code it runs placed first (README "Footprint", `make layout`).
#
# Why: the kernel maps a binary's code 64 KiB around every page fault it takes on it
# ("fault-around"), so a function run once makes its neighbours resident as well. Scattered over
# a 15 MB binary, the third of its functions the operator runs kept 8.1 of its 10 MB of code
# resident; side by side, 4.1 MiB.
# With every function that runs next to the others, resident code is close to the code run.
#
# operator/build.rs makes the C compiler driver call this, through a shim named `ld.lld`, for
# release builds of the musl target. It runs lld with `--symbol-ordering-file`, naming the
# symbols of the objects being linked whose demangled name, crate hashes removed, is in the hot
# list; those hashes change with every compiler, lockfile or feature change, the names do not.
# A function missing from the list is only placed later: a stale list costs memory, never
# correctness.
#
# Environment (set by the shim): MVO_REAL_LLD, the lld to run; MVO_HOT_FUNCTIONS, the list;
# MVO_LAYOUT_DIR, where the resolved order and a one-line report are written.
set -u

# Files of this link are named after its output (`-o path`): a binary and an example share OUT_DIR.
# A requested strip is done after the link, keeping the unstripped twin for `make layout`:
# callgrind needs names, and only a twin of the shipped binary has exactly its functions (LLVM
# merges identical functions, and which name survives changes with the crate hashes, i.e. with
# any profile or feature change; each hot function missed costs up to 64 KiB).
out=a.out
previous=
strip_after=
for arg in "$@"; do
    shift
    case $arg in
    -s | --strip-all) strip_after=yes ;;
    *) set -- "$@" "$arg" ;;
    esac
    [ "$previous" = -o ] && out=$arg
    previous=$arg
done
work=$MVO_LAYOUT_DIR/$(basename "$out")
mkdir -p "$work" || exit 1

order_symbols() {
    # The objects on the command line, also inside response files (`@file`, one per line).
    for arg in "$@"; do
        case $arg in
        @*) sed -e 's/^"//' -e 's/"$//' "${arg#@}" ;;
        *) printf '%s\n' "$arg" ;;
        esac
    done | grep '\.o$' >"$work/objects"

    # Text symbols defined by those objects, mangled and as the hot list names them.
    : >"$work/text-symbols"
    while IFS= read -r object; do
        nm --defined-only "$object" | awk '$2 ~ /^[tTwW]$/ { print $3 }' >>"$work/text-symbols" || return 1
    done <"$work/objects"
    sort -u -o "$work/text-symbols" "$work/text-symbols" || return 1
    "$(dirname "$0")/demangle.sh" <"$work/text-symbols" >"$work/text-demangled" || return 1

    # This binary's symbols whose name is hot, then hot C symbols (musl, ring): those have one
    # name and live in archives, which lld searches itself.
    paste "$work/text-demangled" "$work/text-symbols" | awk -F '\t' -v report="$work/report" '
        FILENAME == ARGV[1] { hot[$0] = 1; if ($0 !~ /::/ && $0 !~ /^</) c[$0] = 1; listed++; next }
        $1 in hot { print $2; placed++; seen[$1] = 1 }
        END {
            for (name in c) if (!(name in seen)) print name
            printf "symbol order: %d of %d text symbols placed first, from %d hot names\n",
                placed, FNR, listed > report
        }' "$MVO_HOT_FUNCTIONS" - >"$work/symbol-order"
}

# Ordering is an optimisation: if it cannot be computed, link in the default order.
if ! order_symbols "$@" 2>"$work/errors"; then
    echo "symbol order: not computed, default order ($(head -c 300 "$work/errors"))" >"$work/report"
    : >"$work/symbol-order"
fi

"$MVO_REAL_LLD" -flavor gnu "$@" --symbol-ordering-file="$work/symbol-order" --no-warn-symbol-ordering || exit
if [ -n "$strip_after" ]; then
    cp "$out" "$work/unstripped" && strip --strip-all "$out"
fi
