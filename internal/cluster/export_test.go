package cluster

// OnceLen is how many one-time tokens g holds.
func OnceLen(g *Group) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.once)
}
