package nodes

// The virtual border router terminates the Express Connect circuit on the
// cloud side and is attached to the CEN; it routes statically (methods 1 and
// 2) or runs BGP with the on-premises gateway (method 3).
func registerVBR(r *Registry) {
	r.Register(&Kind{Name: "vbr", Element: "virtual border router (Express Connect)", Forwards: true})
}
