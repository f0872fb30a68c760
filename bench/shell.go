package bench

import (
	"fmt"
	"strings"

	"github.com/emu-lab/emu/internal/plan"
)

// Script is what an administrator would write by hand to build the lab of p:
// one ip command per step of the plan, so it creates exactly the objects emu
// creates (the same namespaces with the same sysctls and loopback up, veth
// ends directly in their namespaces and up, addresses, routes), serially.
// teardown deletes the namespaces, which takes every veth with them, as emu's
// destroy does. Steps with no plain ip equivalent (tunnels) are an error.
func Script(p *plan.Plan) (deploy, teardown string, err error) {
	var d strings.Builder
	d.WriteString("set -e\n")
	for _, stage := range p.Stages {
		for _, step := range stage.Steps {
			cmds := commands(step)
			if cmds == nil {
				return "", "", fmt.Errorf("lab %s: the shell baseline has no ip commands for %q (a %s step): measure labs without it", p.Lab, step, stage.Name)
			}
			for _, cmd := range cmds {
				d.WriteString(cmd)
				d.WriteByte('\n')
			}
		}
	}
	var t strings.Builder
	t.WriteString("set -e\n")
	for i := len(p.Nodes) - 1; i >= 0; i-- {
		fmt.Fprintf(&t, "ip netns del %s\n", p.Nodes[i].Namespace)
	}
	return d.String(), t.String(), nil
}

func commands(step plan.Step) []string {
	switch s := step.(type) {
	case plan.Namespace:
		fwd := "0"
		if s.Forwarding {
			fwd = "1"
		}
		sysctls := "net.ipv4.ip_forward=" + fwd + " net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.fib_multipath_hash_policy=1"
		if s.IPv6 {
			sysctls += " net.ipv6.conf.all.forwarding=" + fwd + " net.ipv6.fib_multipath_hash_policy=1 net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
		}
		return []string{
			"ip netns add " + s.Name,
			"ip netns exec " + s.Name + " sysctl -qw " + sysctls,
			"ip -n " + s.Name + " link set lo up",
		}
	case plan.Veth:
		mtu := ""
		if s.MTU > 0 {
			mtu = fmt.Sprintf(" mtu %d", s.MTU)
		}
		return []string{
			fmt.Sprintf("ip -n %s link add %s%s type veth peer name %s netns %s%s", s.A.Namespace, s.A.Interface, mtu, s.B.Interface, s.B.Namespace, mtu),
			fmt.Sprintf("ip -n %s link set %s up", s.A.Namespace, s.A.Interface),
			fmt.Sprintf("ip -n %s link set %s up", s.B.Namespace, s.B.Interface),
		}
	case plan.Address:
		return []string{fmt.Sprintf("ip -n %s addr add %s dev %s", s.Namespace, s.Prefix, s.Interface)}
	case plan.RateLimit:
		tc := fmt.Sprintf("ip netns exec %s tc ", s.Namespace)
		if !s.SplitESP {
			return []string{fmt.Sprintf("%sqdisc replace dev %s root tbf rate %dmbit burst 32kb latency 20ms", tc, s.Interface, s.Mbit)}
		}
		return []string{
			fmt.Sprintf("%sqdisc replace dev %s root handle 1: htb default 20", tc, s.Interface),
			fmt.Sprintf("%sclass replace dev %s parent 1: classid 1:10 htb rate %dmbit", tc, s.Interface, s.Mbit),
			fmt.Sprintf("%sclass replace dev %s parent 1: classid 1:20 htb rate %dmbit", tc, s.Interface, s.Mbit),
			fmt.Sprintf("%sfilter add dev %s parent 1: protocol ip prio 1 u32 match ip protocol 50 0xff flowid 1:10", tc, s.Interface),
			fmt.Sprintf("%sfilter add dev %s parent 1: protocol ipv6 prio 1 u32 match ip6 protocol 50 0xff flowid 1:10", tc, s.Interface),
		}
	case plan.Route:
		cmd := fmt.Sprintf("ip -n %s route add %s", s.Namespace, s.Dst)
		if s.Via.IsValid() {
			cmd += " via " + s.Via.String()
		}
		if s.Dev != "" {
			cmd += " dev " + s.Dev
		}
		if s.Metric != 0 {
			cmd += fmt.Sprintf(" metric %d", s.Metric)
		}
		return []string{cmd}
	}
	return nil
}
