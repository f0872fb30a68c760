package lab

// PutForTest stores a record as a deploy would, for tests that need a
// deployed lab's record without deploying one.
func (s Store) PutForTest(r *Record) error { return s.put(r) }
