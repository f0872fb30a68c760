package lab

// PutForTest stores a record as a deploy would, for tests that need a
// deployed lab's record without deploying one.
func (s Store) PutForTest(r *Record) error { return s.put(r) }

// StopAgentForTest is stopAgent in any namespace, for tests that race it
// with processes of their own.
func StopAgentForTest(cfgPath string) error { return stopAgent(cfgPath, nil) }

// AgentPIDsForTest is agentPIDs in any namespace.
func AgentPIDsForTest(cfgPath string) ([]int, error) { return agentPIDs(cfgPath, nil) }
