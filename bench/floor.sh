#!/usr/bin/env bash
# The floor for bench/up.py: the seed lab's namespaces, BIRD mesh and pods built by a plain
# shell script with no SSH and no ansible, up to a pod-to-pod ping across nodes.
# Usage: floor.sh up DIR | floor.sh down DIR       (root; cleans only what it created)
set -euo pipefail
cmd=$1 dir=$2
P=lcf                           # every name this script creates starts with it
nodes=(k8s-master k8s-worker-1 k8s-worker-2)
addrs=(10.12.22.1 10.12.22.2 10.12.22.3)
br=${P}-br
down() {
  for i in 0 1 2; do
    ns=$P-n$i
    if [ -e /run/netns/$ns ]; then
      for pid in $(ip netns pids $ns); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del $ns
    fi
    [ -e /run/netns/$P-p$i ] && ip netns del $P-p$i
  done
  ip link del $br 2>/dev/null || true
  for _ in $(seq 50); do ip -o link show | grep -q " $P-v" || break; sleep 0.1; done
  rm -rf "$dir"
}
if [ "$cmd" = down ]; then down; exit 0; fi
mkdir -p "$dir"
ip link add $br type bridge
ip addr add 10.12.255.254/16 dev $br
ip link set $br up
for i in 0 1 2; do
  ns=$P-n$i a=${addrs[$i]}
  ip netns add $ns
  ip link add $P-v$i type veth peer name ens192 netns $ns
  ip link set $P-v$i master $br up
  ip -n $ns link set lo up
  ip netns exec $ns sysctl -qw net.ipv4.ip_forward=1
  ip -n $ns addr add $a/16 dev ens192
  ip -n $ns link set ens192 up
  ip -n $ns route add default via 10.12.255.254
  mac=$(printf '66:%02x:00:00:00:%02x' $((i+1)) $((i+1)))
  ip -n $ns link add vxlan.calico type vxlan id 4096 local $a dev ens192 dstport 4789 nolearning
  ip -n $ns link set vxlan.calico address $mac mtu 1450 up
  ip -n $ns addr add 192.168.$i.1/32 dev vxlan.calico
  {
    echo "router id $a;"
    echo 'protocol device { scan time 2; }'
    echo 'protocol direct { ipv4; interface "ens192"; }'
    echo 'protocol kernel { ipv4 { import none; export filter { if net ~ 192.168.0.0/16 && proto = "blocks" then accept; reject; }; }; }'
    echo "protocol static blocks { ipv4; route 192.168.$i.0/24 blackhole; }"
    for j in 0 1 2; do
      [ $j = $i ] && continue
      echo "protocol bgp Mesh_${addrs[$j]//./_} { local $a as 64512; neighbor ${addrs[$j]} as 64512; connect delay time 1; connect retry time 1; error wait time 1,2; ipv4 { import all; export where proto = \"blocks\"; next hop self; }; }"
    done
  } > "$dir/bird$i.conf"
  ip netns exec $ns bird -c "$dir/bird$i.conf" -s "$dir/bird$i.ctl" -P "$dir/bird$i.pid"
  # pod
  p=$P-p$i
  ip netns add $p
  ip -n $ns link add cali$P$i type veth peer name eth0 netns $p
  ip -n $ns link set cali$P$i up
  ip netns exec $ns sysctl -qw net.ipv4.conf.cali$P$i.proxy_arp=1 net.ipv4.neigh.cali$P$i.proxy_delay=0
  ip -n $ns route add 192.168.$i.2/32 dev cali$P$i scope link
  ip -n $p link set lo up
  ip -n $p addr add 192.168.$i.2/32 dev eth0
  ip -n $p link set eth0 up
  ip -n $p route add 169.254.1.1 dev eth0 scope link
  ip -n $p route add default via 169.254.1.1 dev eth0
done
# Felix-style VXLAN routes
for i in 0 1 2; do for j in 0 1 2; do
  [ $j = $i ] && continue
  mac=$(printf '66:%02x:00:00:00:%02x' $((j+1)) $((j+1)))
  ip -n $P-n$i neigh add 192.168.$j.1 lladdr $mac dev vxlan.calico nud permanent
  bridge -n $P-n$i fdb add $mac dev vxlan.calico dst ${addrs[$j]}
  ip -n $P-n$i route add 192.168.$j.0/24 via 192.168.$j.1 dev vxlan.calico onlink
done; done
# wait for BGP and the ping
for _ in $(seq 100); do
  n=$(for i in 0 1 2; do birdc -s "$dir/bird$i.ctl" show protocols; done | grep -c Established || true)
  [ "$n" = 6 ] && break; sleep 0.1
done
ip netns exec $P-p1 ping -c1 -W2 192.168.2.2 >/dev/null
echo "floor: mesh established ($n/6) and pod ping ok"
