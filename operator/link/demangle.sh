#!/bin/sh
# Mangled symbol names on stdin, one per line, to the names the hot list holds: demangled, crate
# hashes removed (`crate[0123abcd]::f` and legacy `f::h0123456789abcdef` become `crate::f`, `f`).
# Used on both sides, by `make layout` on the profile and by ordered-lld.sh on the objects.
exec c++filt | sed -E -e 's/([[:alnum:]_])\[[0-9a-f]+\]/\1/g' -e 's/::h[0-9a-f]{16}$//'
