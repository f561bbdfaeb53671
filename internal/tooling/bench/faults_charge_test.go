//go:build linux

package bench

import (
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
)

// TestChargedPackage: a fault goes to the first frame outside the standard
// library, else the first outside the runtime, read from this test
// binary's own function table.
func TestChargedPackage(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tab := symbols(t, exe)
	pc := func(f any) uint64 { return uint64(reflect.ValueOf(f).Pointer()) }
	gc, repeat, ours := pc(runtime.GC), pc(strings.Repeat), pc(proctest.FreePort)
	for _, tc := range []struct {
		stack []uint64
		want  string
		ok    bool
	}{
		{[]uint64{gc, repeat, ours}, "github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest", true},
		{[]uint64{gc, repeat}, "strings", true},
		{[]uint64{gc}, "runtime", true},
		{[]uint64{0}, "runtime", false},
	} {
		if got, ok := chargedPackage(tab, tc.stack); got != tc.want || ok != tc.ok {
			t.Errorf("chargedPackage(%v) = %q, %v; want %q, %v", tc.stack, got, ok, tc.want, tc.ok)
		}
	}
}
