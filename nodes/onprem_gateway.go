package nodes

// The on-premises gateway is the customer's edge device: LAN side toward the
// clients, the Express Connect uplink toward the VBR, and the IPsec endpoint
// whose "VPN IP" the VPN gateway peers with.
func registerOnpremGateway(r *Registry) {
	r.Register(&Kind{Name: "onprem-gateway", Element: "customer gateway device", Forwards: true})
}
