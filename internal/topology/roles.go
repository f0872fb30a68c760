package topology

// Roles is what a node of a kind does in the lab. Checks, trace, graph and
// plan ask these instead of comparing kind names, so a new kind (or a node
// running third-party software) plays the roles its kind declares.
type Roles struct {
	// Forwards: the namespace forwards packets between its interfaces
	// (router-like kinds); end systems only send and answer.
	Forwards bool
	// EndSystem: the checks send and answer their traffic from it (the
	// client in the data center, an ECS instance).
	EndSystem bool
	// PrivatePath: its interfaces are the private path (Express Connect, CEN
	// attachments), the wire the guide says is unencrypted without IPsec; the
	// encryption check captures there.
	PrivatePath bool
	// CustomerEdge: the data center's end of the IPsec connections; failover
	// breaks its first connection.
	CustomerEdge bool
	// CloudEdge: the cloud's end of the IPsec connections (the private VPN
	// gateway): the routes a VPC sends to it are the ones it publishes, and
	// its routing, static or BGP, is the guide's method's.
	CloudEdge bool
	// CircuitEnd: the cloud's end of the Express Connect circuit (the VBR):
	// its links to a customer edge are the circuit, and its BGP with the
	// customer edge is what method 3 adds.
	CircuitEnd bool
	// VPCRouter: a VPC's vRouter and route table; its subnets are the VPC's
	// vSwitches, which the data center must not overlap.
	VPCRouter bool
	Shape     Shape
}

// Shape is how a node of the kind is drawn by `emu graph`.
type Shape struct {
	DOT                       string // Graphviz node shape
	MermaidOpen, MermaidClose string // Mermaid node brackets
}
