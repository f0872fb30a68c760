package nodes

// The private VPN gateway holds one private IP in a vSwitch of the VPC and
// terminates the IPsec tunnel from the on-premises gateway; it decrypts toward
// the ECS instances and encrypts their replies.
func registerVPNGateway(r *Registry) {
	r.Register(&Kind{Name: "vpn-gateway", Element: "private VPN gateway", Forwards: true})
}
