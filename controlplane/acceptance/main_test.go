package acceptance

import (
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/internal/testwatch"
)

// TestMain bounds every call of the tests' API clients (they use
// http.DefaultClient; no call or stream here should take minutes), so a
// server that stops answering fails the test that called it, and names
// the hung test in the last lines of the output if the package still runs
// into its timeout.
func TestMain(m *testing.M) {
	http.DefaultClient.Timeout = 3 * time.Minute
	os.Exit(testwatch.Run(m))
}
