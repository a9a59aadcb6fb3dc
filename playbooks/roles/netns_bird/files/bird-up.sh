# BIRD up, run by the netns_bird task after its variable lines (conf, sock, pidfile, new: the
# config labctl rendered). A plain file, not a template: see netns_node's node-net.sh.
set -eu
running=0
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then running=1; fi
if [ "$new" != "$(cat "$conf" 2>/dev/null)" ]; then
  printf '%s\n' "$new" > "$conf.new"
  bird -p -c "$conf.new"
  mv "$conf.new" "$conf"
  echo CHANGED config
  if [ "$running" = 1 ]; then
    out=$(birdc -s "$sock" configure)
    case "$out" in *Reconfigured*|*"Reconfiguration in progress"*) echo CHANGED reconfigured ;; *) echo "$out" >&2; exit 1 ;; esac
  fi
fi
if [ "$running" = 0 ]; then
  # raw runs under a pty: without a session of its own, BIRD can get the SIGHUP of the pty
  # between its fork and its setsid() when this SSH session ends
  setsid -w bird -c "$conf" -s "$sock" -P "$pidfile" </dev/null >/dev/null 2>&1
  echo CHANGED started
fi
if [ "$running" = 1 ]; then
  # A route BIRD exports to the kernel but the kernel lacks (deleted by hand, say) would come back
  # only at BIRD's next kernel scan, up to a minute later: restart the kernel protocol, which
  # programs its whole export table again, and wait until the routes are there.
  missing() {
    comm -23 <(birdc -s "$sock" show route export kernel1 | awk '/^[0-9]/ {print $1}' | sort -u) \
             <(ip -4 route show proto bird | awk '{print ($1 ~ /^[0-9]/) ? $1 : $2}' | sort -u)
  }
  gone=$(missing)
  if [ -n "$gone" ]; then
    birdc -s "$sock" restart kernel1 >/dev/null
    for _ in $(seq 50); do [ -z "$(missing)" ] && break; sleep 0.1; done
    echo "CHANGED kernel routes re-exported: $(echo $gone)"
  fi
fi
