package sandbox

import (
	"os"
	"testing"
)

// TestMain removes the programs the sandboxes of this test process shared.
func TestMain(m *testing.M) {
	code := m.Run()
	RemovePrograms()
	os.Exit(code)
}
