"""The fixed shell scripts certfan runs on a host, as text. plan.py builds their argv.

Config values never become shell text: each script is run as
``sh -c SCRIPT NAME ARG...`` and reads the values from ``$1``, ``$2``...; the
whole argv is quoted by ``shlex.join`` in ssh.py. The host's own config test
and reload commands arrive as counted argument lists and are run as ``"$@"``.

``DEPLOY`` does a host's whole exchange in one exec request (one round trip
on the wire, the files streamed on stdin right behind it). Its phases:

    inspect   what live/<cert> is; printed first in every phase
    stage     write archive/<cert>/<version>/ from stdin (key 0600 from creation),
              verify sizes and digests, rename into place; nothing live changes
    hold      say ``held=yes`` and wait for one line on stdin: ``go`` goes on to
              apply, anything else (or the link gone) stops with nothing changed
    apply     [convert certbot's live dir] flip the pointer, config test, reload,
              settle; a failed test or reload flips back (and reloads) at once
    rollback  flip back to $back, config test, reload, settle

stdout carries ``key=value`` lines the controller parses (plan.parse_report);
the commands' own output goes to stderr, for the error report.

``settle``: after a reload, nginx's master starts new workers, sleeps 100 ms,
and only then tells the old ones to stop; until they close their listening
sockets they still accept handshakes and present the old certificate (seen on
2-8 of 50 lab nodes in a single proof round right after the reload). So the
script waits, bounded, until no worker that held the listener before the
reload holds it still (``ss -ltnp``, this host's network namespace); after
that every new connection reaches a new worker.
"""

from __future__ import annotations

DEPLOY = r"""
set -u
umask 022
root=$1 cert=$2 version=$3 port=$4 phases=$5 back=$6 settle_for=$7
shift 7
specs=
n=$1
shift
while [ "$n" -gt 0 ]; do specs="$specs $1:$2:$3"; shift 3; n=$((n-1)); done
live="$root/live/$cert"
dir="$root/archive/$cert"
final="$dir/$version"
target="../archive/$cert/$version"
old=
say() { printf '%s\n' "$*" || exit 1; }  # certfan gone (SIGPIPE may be ignored here)
fail() { say "failed=$1"; exit 3; }
run() {  # run test|reload "$@": the first counted list of "$@", or the second
  which=$1; shift
  n=$1; shift
  if [ "$which" = reload ]; then shift "$n"; n=$1; shift; fi
  k=$#; i=0
  for a; do i=$((i+1)); if [ "$i" -le "$n" ]; then set -- "$@" "$a"; fi; done
  shift "$k"
  "$@" >&2
}
inspect() {
  if [ -d "$root" ]; then say root=present; else say root=missing; fi
  if [ -L "$live" ]; then
    say live=link; say "target=$(readlink -- "$live")"
  elif [ -d "$live" ]; then
    say live=dir
    for f in privkey.pem fullchain.pem cert.pem chain.pem; do
      if [ -L "$live/$f" ]; then say "file=$f $(readlink -- "$live/$f")"
      elif [ -e "$live/$f" ]; then say "file=$f"
      fi
    done
  elif [ -e "$live" ]; then say live=other
  else say live=missing
  fi
  if [ -d "$final" ]; then say version=present; fi
  if [ -r "$live/fullchain.pem" ]; then
    say 'old<<'; cat -- "$live/fullchain.pem"; say; say 'old>>'
  fi
}
verify() {
  for s in $specs; do
    name=${s%%:*}; sha=${s##*:}
    sum=$(sha256sum < "$1/$name") || return 1
    [ "${sum%% *}" = "$sha" ] || { echo "$1/$name: sha256 mismatch" >&2; return 1; }
  done
}
sweep() {  # staging dirs of uploads whose shell is gone (killed, or its host rebooted)
  for t in "$dir"/.*.tmp; do
    [ -d "$t" ] || continue
    p=${t%.tmp}; p=${p##*.}
    case $p in ''|*[!0-9]*) continue ;; esac  # not ours (convert's name has no pid)
    # Gone by both counts (kill -0 alone says "gone" for another user's live shell).
    if ! kill -0 "$p" 2>/dev/null && [ ! -d "/proc/$p" ]; then rm -rf -- "$t" 2>/dev/null; fi
  done
}
stage() {
  [ -d "$root" ] || { echo "$root does not exist" >&2; fail upload; }
  mkdir -p -- "$dir" "$root/live" || fail upload
  sweep
  if [ -d "$final" ]; then
    total=0  # read exactly the files' bytes: stdin may stay open (the hold phase)
    for s in $specs; do size=${s#*:}; total=$((total + ${size%%:*})); done
    head -c "$total" > /dev/null
    verify "$final" || { echo "$final exists with other content; not replacing" >&2; fail upload; }
    say upload=present; return 0
  fi
  # Our own staging name: an upload of a run that died may still be going on here.
  tmp="$dir/.$version.$$.tmp"
  rm -rf -- "$tmp"
  trap 'rm -rf -- "$tmp"' EXIT
  # certfan gone: the next write raises SIGPIPE, which would skip the EXIT trap.
  trap 'exit 1' HUP INT TERM PIPE
  mkdir -- "$tmp" || fail upload
  for s in $specs; do
    name=${s%%:*}; size=${s#*:}; size=${size%%:*}
    if [ "$name" = privkey.pem ]; then
      (umask 077; head -c "$size" > "$tmp/$name") || fail upload
    else
      head -c "$size" > "$tmp/$name" || fail upload
    fi
  done
  verify "$tmp" || fail upload
  sync -- "$tmp"/* "$tmp" || fail upload
  if ! mv -T -- "$tmp" "$final" 2>/dev/null; then
    # Another upload placed the version first (rename never replaces a full directory).
    verify "$final" || { echo "$final exists with other content; not replacing" >&2; fail upload; }
    rm -rf -- "$tmp"; trap - EXIT; say upload=present; return 0
  fi
  trap - EXIT
  sync -- "$dir"
  say upload=ok
}
flip_to() {  # flip_to TARGET: one rename switches key and chain together; "" removes ours
  (
    cd -- "$root/live" || exit 3
    if [ -z "$1" ]; then
      if [ -L "$cert" ]; then rm -f -- "$cert"; fi
      sync -- .; exit 0
    fi
    for f in fullchain.pem privkey.pem; do
      [ -s "$1/$f" ] || { echo "$root/live/$1/$f: missing or empty; not flipping" >&2; exit 3; }
    done
    rm -f -- ".$cert.tmp" && ln -s -- "$1" ".$cert.tmp" && mv -T -- ".$cert.tmp" "$cert" &&
      sync -- .
  )
}
convert() {  # certbot's live dir -> archive/<cert>/certbot-<n>/ and a symlink to it
  n=$(readlink -- "$live/privkey.pem" 2>/dev/null || true)
  n=${n##*privkey}; n=${n%.pem}
  case $n in ''|*[!0-9]*) name=certbot ;; *) name=certbot-$n ;; esac
  copy="$dir/$name"
  prev="../archive/$cert/$name"
  mkdir -p -- "$dir" || fail convert
  if [ -d "$copy" ]; then
    for f in fullchain.pem privkey.pem; do
      [ "$(sha256sum < "$live/$f")" = "$(sha256sum < "$copy/$f")" ] || {
        echo "$copy exists and differs from live/$cert; not converting" >&2; fail convert; }
    done
  else
    tmp="$dir/.$name.tmp"
    rm -rf -- "$tmp"; mkdir -- "$tmp" || fail convert
    for f in fullchain.pem cert.pem chain.pem; do
      if [ -e "$live/$f" ]; then cat -- "$live/$f" > "$tmp/$f" || fail convert; fi
    done
    (umask 077; cat -- "$live/privkey.pem" > "$tmp/privkey.pem") || fail convert
    [ -s "$tmp/fullchain.pem" ] && [ -s "$tmp/privkey.pem" ] || {
      echo "$live: no fullchain.pem and privkey.pem to keep" >&2; rm -rf -- "$tmp"; fail convert; }
    sync -- "$tmp"/* "$tmp"; mv -T -- "$tmp" "$copy" || fail convert
  fi
  # live/<cert> is absent for microseconds between the two renames: a directory
  # cannot be renamed over. nginx reads the files only on (re)load.
  aside="$root/live/.$cert.certbot"
  if [ -e "$aside" ] || [ -L "$aside" ]; then aside="$aside.$(date +%Y%m%d%H%M%S)"; fi
  ( cd -- "$root/live" && rm -f -- ".$cert.tmp" && ln -s -- "$prev" ".$cert.tmp" &&
    mv -T -- "$cert" "$aside" && mv -T -- ".$cert.tmp" "$cert" && sync -- . ) || fail convert
  say "convert=ok ${aside##*/}"
}
listeners() {  # who holds the listener: `ss -p` reads every process's fds, so once
  ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}
workers() {  # the listener holders whose parent holds it too: not the master
  pids=" $(echo $(listeners)) "
  for p in $pids; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    set -- ${s##*)}
    case $pids in *" $2 "*) printf '%s ' "$p" ;; esac
  done
}
holds() {  # holds PID: it still has a listening socket on $port open (cheap: its fds only)
  [ -d "/proc/$1/fd" ] || return 1
  hex=$(printf ':%04X' "$port")
  inodes=$(awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  [ -n "$inodes" ] || return 1
  links=$(ls -l "/proc/$1/fd" 2>/dev/null) || return 1
  for i in $inodes; do case $links in *"socket:[$i]"*) return 0 ;; esac; done
  return 1
}
settle() {
  if [ -z "$old" ] || [ "$settle_for" = 0 ]; then say settle=unknown; return 0; fi
  end=$(( $(date +%s) + settle_for ))
  while :; do
    still=
    for w in $old; do if holds "$w"; then still=1; break; fi; done
    if [ -z "$still" ]; then say settle=ok; return 0; fi
    if [ "$(date +%s)" -ge "$end" ]; then say settle=timeout; return 0; fi
    sleep 0.02
  done
}
undo() {  # undo PREVIOUS RELOADED "$@"
  p=$1 reloaded=$2; shift 2
  flip_to "$p" || { say undo=failed:flip; return 1; }
  if [ "$reloaded" = yes ] && [ -n "$p" ]; then
    run test "$@" || { say undo=failed:test; return 1; }
    old=$(workers)
    run reload "$@" || { say undo=failed:reload; return 1; }
    settle
  fi
  say undo=ok
}
apply() {
  prev=
  if [ -L "$live" ]; then prev=$(readlink -- "$live")
  elif [ -d "$live" ]; then convert
  elif [ -e "$live" ]; then echo "$live is neither a symlink nor a directory" >&2; fail flip
  fi
  say "previous=${prev:--}"
  if [ "$prev" = "$target" ]; then
    say flip=already
    [ "$back" = refresh ] || return 0
  else
    flip_to "$target" || fail flip
    say flip=ok
  fi
  if ! run test "$@"; then
    say test=failed
    [ "$prev" = "$target" ] || undo "$prev" no "$@"
    fail test
  fi
  say test=ok
  old=$(workers)
  if ! run reload "$@"; then
    say reload=failed
    [ "$prev" = "$target" ] || undo "$prev" yes "$@"
    fail reload
  fi
  say reload=ok
  settle
}
inspect
case $phases in *stage*) stage ;; esac
case $phases in *hold*)
  # Staged: wait for the controller's word (the canary proven, or not) on stdin.
  say held=yes
  read -r verdict || verdict=lost
  if [ "$verdict" != go ]; then say "verdict=$verdict"; say done=ok; exit 0; fi ;;
esac
case $phases in *apply*) apply "$@" ;; esac
case $phases in rollback)
  say "previous=$back"
  [ "$back" = - ] && back=
  undo "$back" yes "$@" || fail rollback ;;
esac
say done=ok
"""

# Args: root cert. What prune looks at: the live pointer and the version directories.
LIST = r"""
set -u
root=$1 cert=$2
if [ -L "$root/live/$cert" ]; then printf 'live=%s\n' "$(readlink -- "$root/live/$cert")"; fi
if [ -d "$root/archive/$cert" ]; then
  for d in "$root/archive/$cert"/*/; do
    [ -d "$d" ] || continue
    d=${d%/}
    printf 'dir=%s\n' "${d##*/}"
  done
fi
exit 0
"""

# Args: root cert name...  Each goes aside by rename first (nginx never sees a
# half-deleted directory under a name), then is removed.
DELETE = r"""
set -eu
root=$1 cert=$2
shift 2
cd -- "$root/archive/$cert"
live=$(readlink -- "$root/live/$cert" 2>/dev/null || true)
for v in "$@"; do
  case "$v" in ''|.*|*/*) echo "refusing to delete '$v'" >&2; exit 3 ;; esac
  if [ "${live##*/}" = "$v" ]; then echo "$v is live now; not deleting it" >&2; exit 3; fi
  [ -d "$v" ] || continue
  rm -rf -- ".$v.del"
  mv -T -- "$v" ".$v.del"
  rm -rf -- ".$v.del"
  echo "deleted $v"
done
sync -- .
"""
