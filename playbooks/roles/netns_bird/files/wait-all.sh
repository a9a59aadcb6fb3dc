# Wait for BGP, run by the netns_bird wait_all task after its variable line (pending: "node socket
# want peer|peer|..." per node). A plain file, not a template: see netns_node's node-net.sh.
set -u
deadline=$((SECONDS + 30 + $(printf '%s' "$pending" | grep -c .) / 10))
while :; do
  left=''
  while read -r node sock want peers; do
    [ -n "$node" ] || continue
    got=0
    if [ "$want" -gt 0 ]; then
      got=$(birdc -s "$sock" show protocols 2>/dev/null | grep -cE "^($peers) .*Established")
    fi
    if [ "$got" -lt "$want" ]; then left+="$node $sock $want $peers"$'\n'; fi
  done <<< "$pending"
  pending=$left
  [ -z "$pending" ] && exit 0
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 0.1
done
read -r node sock want peers <<< "$pending"
birdc -s "$sock" show protocols
echo "$(printf '%s' "$pending" | grep -c .) nodes short of their BGP sessions, first $node: only $(birdc -s "$sock" show protocols | grep -cE "^($peers) .*Established") of $want Established after $((SECONDS)) s"
exit 1
