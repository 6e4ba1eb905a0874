#!/usr/bin/env bash
# Print the Debian mirror the test environment downloads from: MVO_DEBIAN_MIRROR when set, else
# the first Debian archive URI of the machine's apt configuration, read in this order:
#   /etc/apt/sources.list.d/*.sources (deb822 "URIs:"), /etc/apt/sources.list,
#   /etc/apt/sources.list.d/*.list ("deb URI suite ...").
# Security archives are skipped (they carry no sid). Fails with a message naming
# MVO_DEBIAN_MIRROR when neither gives one. The repository names no archive host on purpose:
# the machine's own apt configuration is the one that is known to work here.
set -euo pipefail
if [ -n "${MVO_DEBIAN_MIRROR:-}" ]; then echo "${MVO_DEBIAN_MIRROR%/}"; exit 0; fi
APT_ETC=${MVO_APT_ETC:-/etc/apt}   # tests point this at a fixture directory

# A Debian archive URI: http(s)/ftp/file, path ending in /debian, not a security archive.
is_archive='$0 ~ /^(https?|ftp|file):\/\// && $0 ~ /\/debian\/?$/ && $0 !~ /security/'
from_deb822() {  # URIs: lines of deb822 files whose Types include deb
  awk -v RS= '/(^|\n)Types:[^\n]*deb([ \t\n]|$)/' "$1" 2>/dev/null \
    | awk 'tolower($1)=="uris:" { for (i=2;i<=NF;i++) print $i }' | awk "$is_archive" | head -n1
}
from_one_line() {  # "deb [options] URI suite components"
  awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i ~ /^(https?|ftp|file):\/\//) { print $i; break } }' "$1" 2>/dev/null \
    | awk "$is_archive" | head -n1
}
m=""
for f in "$APT_ETC"/sources.list.d/*.sources; do
  [ -r "$f" ] && m=$(from_deb822 "$f") && [ -n "$m" ] && break
done
if [ -z "$m" ]; then
  for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
    [ -r "$f" ] && m=$(from_one_line "$f") && [ -n "$m" ] && break
  done
fi
if [ -z "$m" ]; then
  echo "no Debian mirror: $APT_ETC/sources.list{,.d/*.list,.d/*.sources} name no Debian archive; set MVO_DEBIAN_MIRROR to one (the URL that holds dists/sid)" >&2
  exit 1
fi
echo "${m%/}"
