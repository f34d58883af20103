//go:build race

package responder

// The race detector makes sync.Pool drop some of what is put back, so the
// pooled jobs are allocated again now and then.
func init() { raceEnabled = true }
