package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/emu-lab/emu/internal/ipsec/kernelprobe"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
)

var dataplaneFlag = "ipsec-dataplane"

// chooseDataplane resolves "auto" by probing the kernel, says which dataplane
// runs the tunnels and why, and refuses a forced kernel dataplane the kernel
// cannot run. With dryRun it does not probe, since the probe makes a scratch
// namespace and needs root: it says so, and plans "auto" as userspace.
func chooseDataplane(w io.Writer, t *topology.Topology, flag string, dryRun bool) (string, error) {
	want := t.Dataplane
	if flag != "" {
		want = flag
	}
	hasTunnels := false
	for _, n := range t.Nodes {
		hasTunnels = hasTunnels || len(n.Tunnels) > 0
	}
	switch want {
	case plan.Userspace:
		if hasTunnels {
			fmt.Fprintln(w, "ipsec dataplane: userspace ESP (forced)")
		}
		return plan.Userspace, nil
	case plan.Kernel, "auto":
	default:
		return "", invalidInput{fmt.Errorf("--%s %q: use auto, kernel or userspace", dataplaneFlag, want)}
	}
	if !hasTunnels {
		return plan.Kernel, nil
	}
	if dryRun {
		if want == plan.Kernel {
			fmt.Fprintln(w, "ipsec dataplane: kernel XFRM (forced; --dry-run does not probe whether this kernel has ESP)")
			return plan.Kernel, nil
		}
		fmt.Fprintf(w, "ipsec dataplane: auto, chosen at deploy by probing the kernel, which --dry-run does not do; this plan shows userspace ESP (--%s kernel shows the kernel's)\n", dataplaneFlag)
		return plan.Userspace, nil
	}
	probe := kernelprobe.Probe()
	switch {
	case probe.OK():
		fmt.Fprintln(w, "ipsec dataplane: kernel XFRM (this kernel has ESP and XFRM interfaces)")
		return plan.Kernel, nil
	case want == plan.Kernel:
		return "", fmt.Errorf("the kernel ESP dataplane was asked for, but %s: use --%s userspace, or a kernel with those options", probe.Reason, dataplaneFlag)
	}
	fmt.Fprintf(w, "ipsec dataplane: userspace ESP, because this kernel lacks %s (deploy with --%s kernel to see the kernel's answers)\n", strings.Join(missingOptions(probe), " and "), dataplaneFlag)
	return plan.Userspace, nil
}

// missingOptions names the kernel options the probe found missing.
func missingOptions(r kernelprobe.Result) []string {
	var out []string
	if !r.ESP {
		out = append(out, "ESP (CONFIG_INET_ESP)")
	}
	if !r.XFRMInterface {
		out = append(out, "XFRM interfaces (CONFIG_XFRM_INTERFACE)")
	}
	return out
}
