# Pods, run by the netns_workloads task after its variable lines (node_dir; pods: "name ip veth
# netns" per pod of this node). A plain file, not a template: see netns_node's node-net.sh.
set -euo pipefail
# pods this node had and should not have any more (moved, or gone from the topology)
list=$node_dir/pods.list
want=''
while read -r _ _ veth ns; do
  if [ -n "$ns" ]; then want+="$ns $veth"$'\n'; fi
done <<< "$pods"
if [ -f "$list" ]; then
  while read -r ns veth; do
    case "$want" in *"$ns $veth"*) continue ;; esac
    ip link del "$veth" 2>/dev/null || true
    if [ -e "/run/netns/$ns" ]; then ip netns del "$ns"; fi
    echo "CHANGED removed $ns"
  done < "$list"
fi
if [ "$want" != "$(cat "$list" 2>/dev/null)" ]; then printf '%s' "$want" > "$list"; fi
# Wired as Calico's CNI plugin and Felix wire a workload: the node's veth end is ee:ee:ee:ee:ee:ee,
# the pod reaches it through a permanent neighbour for 169.254.1.1, and the node reaches the pod
# through a permanent neighbour for its IP. Permanent entries stay out of the kernel's neighbour
# table limits (shared by every namespace on the host), and no ARP runs between pod and node.
# What is there is read once per node and once per pod, and only what differs is applied (addr
# before link in the batch: after `link show`, `ip -batch` prints addresses without their inet lines).
declare -A links
while read -r _ name rest; do name=${name%:}; links[${name%%@*}]=$rest; done < <(ip -o link show)
routes=$'\n'$(ip -4 route show)
neigh=$'\n'$(ip -4 neigh show nud permanent)
node_batch=''
while read -r name ip veth ns; do
[ -n "$ns" ] || continue
# a pod: $ip/32 on eth0 (0a:58 + the IP's octets), default via 169.254.1.1 on $veth
IFS=. read -r o1 o2 o3 o4 <<< "$ip"
printf -v mac '0a:58:%02x:%02x:%02x:%02x' "$o1" "$o2" "$o3" "$o4"
cur=''
if [ -e "/run/netns/$ns" ]; then
  cur=$(printf 'addr show dev eth0\nlink show\nroute show\nneigh show dev eth0\n' | ip -n "$ns" -4 -o -batch - 2>/dev/null || true)
else
  ip netns add "$ns"; echo "CHANGED netns $name"
fi
l=${links[$veth]:-}
if [ -z "$l" ]; then
  ip link add "$veth" address ee:ee:ee:ee:ee:ee type veth peer name eth0 address "$mac" netns "$ns"
  echo "CHANGED veth $name"
  cur=''
fi
echo 1 > "/proc/sys/net/ipv4/conf/$veth/proxy_arp"
echo 0 > "/proc/sys/net/ipv4/neigh/$veth/proxy_delay"
[[ $l == *"link/ether ee:ee:ee:ee:ee:ee "* ]] || node_batch+="link set $veth address ee:ee:ee:ee:ee:ee"$'\n'
[[ $l == *",UP"* ]] || node_batch+="link set $veth up"$'\n'
[[ $routes == *$'\n'"$ip dev $veth scope link"* ]] || node_batch+="route replace $ip/32 dev $veth scope link"$'\n'
[[ $neigh == *$'\n'"$ip dev $veth lladdr $mac PERMANENT"* ]] || node_batch+="neigh replace $ip lladdr $mac dev $veth nud permanent"$'\n'
pod_batch=''
[[ $cur == *"lo: <LOOPBACK,UP"* ]] || pod_batch+=$'link set lo up\n'
[[ $cur == *"link/ether $mac "* ]] || pod_batch+="link set eth0 address $mac"$'\n'
re='eth0@[^'$'\n'']*,UP'
[[ $cur =~ $re ]] || pod_batch+=$'link set eth0 up\n'
[[ $cur == *" inet $ip/32 "* ]] || pod_batch+="addr replace $ip/32 dev eth0"$'\n'
[[ $cur == *$'\n'"169.254.1.1 dev eth0 scope link"* ]] || pod_batch+=$'route replace 169.254.1.1 dev eth0 scope link\n'
[[ $cur == *"default via 169.254.1.1 dev eth0"* ]] || pod_batch+=$'route replace default via 169.254.1.1 dev eth0\n'
[[ $cur == *"169.254.1.1 lladdr ee:ee:ee:ee:ee:ee PERMANENT"* ]] || pod_batch+=$'neigh replace 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent\n'
if [ -n "$pod_batch" ]; then
  printf '%s' "$pod_batch" | ip -n "$ns" -batch -
  echo "CHANGED $name: $(printf '%s' "$pod_batch" | tr '\n' ';')"
fi
done <<< "$pods"
if [ -n "$node_batch" ]; then
  printf '%s' "$node_batch" | ip -batch -
  echo "CHANGED pod links: $(printf '%s' "$node_batch" | tr '\n' ';')"
fi
