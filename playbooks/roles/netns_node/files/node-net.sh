# Node network, run by the netns_node task after its variable lines (tunnel, address, nic,
# vtep_mac, tunnel_ip, peers: "tunnel_ip mac address" per lab node; felix, felix_routes: the
# Felix-programmed routes, one per line, when the lab has them). A plain file, not a
# template: ansible compiles a template afresh in every forked worker, i.e. per node and task,
# which cost more than the script itself on a big lab.
set -euo pipefail
# forwarding inside this node's namespace only: the node routes for its pods
if [ "$(sysctl -n net.ipv4.ip_forward)" != 1 ]; then sysctl -qw net.ipv4.ip_forward=1; echo CHANGED ip_forward; fi
if [ "$tunnel" = vxlan.calico ]; then
  if ! ip link show vxlan.calico >/dev/null 2>&1; then
    # Felix's VTEP: VNI 4096, UDP 4789, no learning (peers are programmed below)
    ip link add vxlan.calico type vxlan id 4096 local "$address" dev "$nic" dstport 4789 nolearning
    ip link set vxlan.calico address "$vtep_mac" mtu 1450
    echo CHANGED vxlan.calico
  fi
elif [ "$tunnel" = tunl0 ]; then
  if ! ip link show tunl0 >/dev/null 2>&1; then
    ip link add name tunl0 type ipip
    echo CHANGED tunl0
  fi
  ip link set tunl0 mtu 1480
fi
if [ -n "$tunnel" ]; then
  ip link set "$tunnel" up
  if ! ip -4 -o addr show dev "$tunnel" | grep -F " $tunnel_ip/32 " >/dev/null; then
    ip addr add "$tunnel_ip/32" dev "$tunnel"
    echo CHANGED tunnel address
  fi
fi
if [ -n "$felix" ]; then
  # Felix's routes (VXLAN): the blocks of the other nodes, from their affinities, not from BGP; protocol
  # 80 as Felix tags them. Through vxlan.calico, or natively to a node in this network under VXLANCrossSubnet.
  before=$(ip -4 route show proto 80 | sort)
  add_routes='' want_dsts=' '
  while read -r r; do
    [ -n "$r" ] || continue
    add_routes+="route replace $r"$'\n'
    read -r first second _ <<< "$r"
    if [ "$first" = blackhole ]; then want_dsts+="$second "; else want_dsts+="$first "; fi
  done <<< "$felix_routes"
  if [ -n "$add_routes" ]; then printf '%s' "$add_routes" | ip -batch -; fi
  ip -4 route show proto 80 | while read -r first second _; do
    dst=$first; [ "$first" = blackhole ] && dst=$second
    if [[ "$want_dsts" != *" $dst "* ]]; then ip route del "$dst" proto 80; fi
  done
  if [ "$before" != "$(ip -4 route show proto 80 | sort)" ]; then echo CHANGED felix routes; fi
fi
[ "$tunnel" = vxlan.calico ] || exit 0
# every peer's VTEP: compared in the shell against one listing, missing entries applied in one
# batch (a process per peer and entry does not scale to a hundred nodes)
cur_neigh=$(ip neigh show dev vxlan.calico nud permanent)
cur_fdb=$(bridge fdb show dev vxlan.calico)
add_neigh='' add_fdb='' want_macs=' ' want_ips=' '
while read -r p_ip p_mac p_addr; do
  if [ -z "$p_ip" ] || [ "$p_addr" = "$address" ]; then continue; fi
  want_macs+="$p_mac " want_ips+="$p_ip "
  case "$cur_neigh" in *"$p_ip lladdr $p_mac PERMANENT"*) ;; *) add_neigh+="neigh replace $p_ip lladdr $p_mac dev vxlan.calico nud permanent"$'\n' ;; esac
  case "$cur_fdb" in *"$p_mac dst $p_addr "*) ;; *) add_fdb+="fdb replace $p_mac dev vxlan.calico dst $p_addr self permanent"$'\n' ;; esac
done <<< "$peers"
if [ -n "$add_neigh" ]; then printf '%s' "$add_neigh" | ip -batch -; echo "CHANGED neigh: $(printf '%s' "$add_neigh" | wc -l)"; fi
if [ -n "$add_fdb" ]; then printf '%s' "$add_fdb" | bridge -batch -; echo "CHANGED fdb: $(printf '%s' "$add_fdb" | wc -l)"; fi
# peers that left the lab: their VTEP entries go too
bridge fdb show dev vxlan.calico | while read -r mac kw dst _; do
  if [ "$kw" = dst ] && [[ "$want_macs" != *" $mac "* ]]; then
    bridge fdb del "$mac" dev vxlan.calico dst "$dst" self
    echo "CHANGED fdb del $mac"
  fi
done
ip neigh show dev vxlan.calico nud permanent | while read -r ip _; do
  if [[ "$want_ips" != *" $ip "* ]]; then
    ip neigh del "$ip" dev vxlan.calico
    echo "CHANGED neigh del $ip"
  fi
done
