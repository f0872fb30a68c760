package topology

// EndSystemPair returns the two end systems a probe across the lab joins:
// the first end system (in declaration order) on the data center's side of
// the IPsec connections and the first on the cloud's side, whatever their
// names or order in the file. An end system is on the side of the tunnel
// endpoint nearest it over links: a customer edge's (data center) or any
// other tunnel endpoint's (the VPN gateway). A lab without tunnel endpoints
// on both sides has no sides: then the first two end systems. ok is false
// when there is no such pair (fewer than two end systems, or none on one
// side).
func (t *Topology) EndSystemPair() (dc, cloud *Node, ok bool) {
	side := t.sides()
	var ends []*Node
	for _, n := range t.Nodes {
		if !n.Roles.EndSystem {
			continue
		}
		ends = append(ends, n)
		switch s, known := side[n.Name]; {
		case !known:
		case s && dc == nil:
			dc = n
		case !s && cloud == nil:
			cloud = n
		}
	}
	if !t.hasBothSides() {
		if len(ends) < 2 {
			return nil, nil, false
		}
		return ends[0], ends[1], true
	}
	return dc, cloud, dc != nil && cloud != nil
}

// sides labels every node reached over links from a tunnel endpoint with
// the side of the nearest one (true: the data center's), by a breadth-first
// walk from all endpoints at once; at equal distance the data center wins.
func (t *Topology) sides() map[string]bool {
	next := map[string][]string{}
	for _, l := range t.Links {
		a, b := l.Ends[0].Node, l.Ends[1].Node
		next[a] = append(next[a], b)
		next[b] = append(next[b], a)
	}
	side := map[string]bool{}
	var queue []string
	for _, dcSide := range []bool{true, false} {
		for _, n := range t.Nodes {
			if len(n.Tunnels) > 0 && n.Roles.CustomerEdge == dcSide {
				side[n.Name] = dcSide
				queue = append(queue, n.Name)
			}
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, m := range next[n] {
			if _, seen := side[m]; !seen {
				side[m] = side[n]
				queue = append(queue, m)
			}
		}
	}
	return side
}

func (t *Topology) hasBothSides() bool {
	var dc, cloud bool
	for _, n := range t.Nodes {
		if len(n.Tunnels) > 0 {
			dc = dc || n.Roles.CustomerEdge
			cloud = cloud || !n.Roles.CustomerEdge
		}
	}
	return dc && cloud
}
