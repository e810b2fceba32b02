package e2e

import (
	"os"
	"testing"

	"github.com/gantry-iot/gantry/internal/testwatch"
)

// TestMain names the hung test in the last lines of the output if the
// package runs into its timeout.
func TestMain(m *testing.M) { os.Exit(testwatch.Run(m)) }
