// Package topologies ships the scenario files, embedded so tests (also the
// ones run inside the kernel-ESP VM, where no source tree exists) deploy the
// very files users read.
package topologies

import "embed"

// FS holds every shipped topology file.
//
//go:embed *.yaml frr-onprem strongswan-onprem
var FS embed.FS
