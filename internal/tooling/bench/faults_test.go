//go:build linux

package bench

import (
	"bufio"
	"cmp"
	"debug/elf"
	"debug/gosym"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// TestStartFaults counts the page faults each binary takes from exec to
// ready, by what they land in, through the kernel's
// exceptions:page_fault_user tracepoint. On this project's build machine a
// fault costs about as much as 10,000 instructions, so the count explains
// much of exec-to-ready that instruction counts do not (docs/performance.md,
// Start-up). It needs root and tracefs; it reports the cost of one fault
// beside the table, and which packages' work takes the server's faults
// beyond the floor's (from the faults' user stacks).
//
//	BENCH_FAULTS=1 go test ./internal/tooling/bench -count=1 -run TestStartFaults -v
func TestStartFaults(t *testing.T) {
	if os.Getenv("BENCH_FAULTS") == "" {
		t.Skip("set BENCH_FAULTS=1 (as root, with tracefs) to count the page faults of a start")
	}
	tr := openFaultTrace(t)
	targets := startTargets(t)
	var b strings.Builder
	fmt.Fprintf(&b, "\npage faults from exec to ready, the run with the median total of 5\n\n| binary | total | code | read-only data | pclntab | data and bss | Go heap | other anonymous | other |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, tg := range targets {
		sections := regionsOf(t, tg.bin)
		var runs []faultCount
		for range 5 {
			mappings, trace := tr.run(t, tg)
			runs = append(runs, countFaults(sections, mappings, trace))
		}
		slices.SortFunc(runs, func(a, b faultCount) int { return a.total() - b.total() })
		c := runs[len(runs)/2]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d |\n", tg.name, c.total(), c[regionText], c[regionROData], c[regionPCLN], c[regionData], c[regionHeap], c[regionAnon], c[regionOther])
	}
	fault, populate := faultCost(t)
	fmt.Fprintf(&b, "\na first write to a 4 KiB anonymous page costs %.1f µs as a fault, %s through MADV_POPULATE_WRITE\n", fault, populate)
	b.WriteString(faultsByPackage(t, tr, targets))
	t.Log(b.String())
}

// faultsByPackage traces one more start of each target with the user stack
// of every fault, charges each fault to a package, and returns the packages
// where the server takes the most faults beyond the floor (targets[0]).
// A fault is charged to the first frame outside the standard library, or
// else the first outside the runtime: the code whose work touched the page.
// The kernel walks 8 frames, so a fault deep in the standard library is
// charged to the library package.
func faultsByPackage(t *testing.T, tr faultTrace, targets []target) string {
	t.Helper()
	const floor, dev = 0, 1 // startTargets' order
	// The stack lines must be bare addresses (sym-userobj off).
	restore, err := tr.set(map[string]string{"options/userstacktrace": "1", "options/sym-userobj": "0"})
	if err != nil {
		return fmt.Sprintf("\n(no table of packages: no user stacks here: %v)\n", err)
	}
	defer restore()
	counts := make([]map[string]int, len(targets))
	pkgs := map[string]bool{}
	var unresolved int
	for i, tg := range targets {
		counts[i] = map[string]int{}
		funcs := symbols(t, tg.bin)
		_, trace := tr.run(t, tg)
		for _, stack := range faultStacks(trace) {
			p, ok := chargedPackage(funcs, stack)
			if !ok {
				unresolved++
			}
			counts[i][p]++
			pkgs[p] = true
		}
	}
	if unresolved > 0 {
		// Charged to the runtime, which would then be overstated.
		t.Logf("%d faults had no stack frame in a known function", unresolved)
	}
	rows := slices.Collect(maps.Keys(pkgs))
	beyond := func(p string) int { return counts[dev][p] - counts[floor][p] }
	slices.SortFunc(rows, func(a, b string) int { return cmp.Or(beyond(b)-beyond(a), strings.Compare(a, b)) })
	var b strings.Builder
	b.WriteString("\nwhere the server's faults beyond the floor's are taken (one traced start each; the 15 packages with most beyond it in dev mode)\n\n| package |")
	for _, tg := range targets {
		b.WriteString(" " + tg.name + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(targets)) + "\n")
	row := func(name string, pkgs []string) {
		b.WriteString("| " + name + " |")
		for i := range targets {
			n := 0
			for _, p := range pkgs {
				n += counts[i][p]
			}
			fmt.Fprintf(&b, " %d |", n)
		}
		b.WriteString("\n")
	}
	top := min(15, len(rows))
	for _, p := range rows[:top] {
		row(p, []string{p})
	}
	row("other packages", rows[top:])
	row("total", rows)
	return b.String()
}

// symbols reads bin's function table (which a stripped Go binary keeps).
func symbols(t *testing.T, bin string) *gosym.Table {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pclntab, text := f.Section(".gopclntab"), f.Section(".text")
	if pclntab == nil || text == nil {
		t.Fatalf("%s: no .gopclntab or .text section", bin)
	}
	pcln, err := pclntab.Data()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(pcln, text.Addr))
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

var stackFrame = regexp.MustCompile(`^\s*=>\s+<([0-9a-f]+)>`)

// faultStacks splits a trace taken with userstacktrace into each fault's
// frames, innermost first.
func faultStacks(trace string) [][]uint64 {
	var stacks [][]uint64
	for _, line := range strings.Split(trace, "\n") {
		if strings.Contains(line, "page_fault_user: address=") {
			stacks = append(stacks, nil)
		} else if m := stackFrame.FindStringSubmatch(line); m != nil && len(stacks) > 0 {
			pc, _ := strconv.ParseUint(m[1], 16, 64)
			stacks[len(stacks)-1] = append(stacks[len(stacks)-1], pc)
		}
	}
	return stacks
}

// chargedPackage is the package a fault with this stack is charged to:
// the first frame's outside the standard library, else the first outside
// the runtime, else the runtime; ok is false when no frame resolved.
func chargedPackage(tab *gosym.Table, stack []uint64) (pkg string, ok bool) {
	var firstOutsideRuntime string
	for _, pc := range stack {
		fn := tab.PCToFunc(pc)
		if fn == nil {
			continue
		}
		ok = true
		// Compiler-generated and assembly functions have no package ("").
		p := strings.ReplaceAll(fn.PackageName(), "%2e", ".")
		if strings.Contains(strings.Split(p, "/")[0], ".") {
			return p, true
		}
		if firstOutsideRuntime == "" && p != "" && p != "runtime" && !strings.HasPrefix(p, "internal/") {
			firstOutsideRuntime = p
		}
	}
	return cmp.Or(firstOutsideRuntime, "runtime"), ok
}

// Where a fault lands.
const (
	regionText   = iota // the executable's code
	regionROData        // .rodata, .typelink, .itablink
	regionPCLN          // .gopclntab: the runtime's function tables, read to walk stacks
	regionData          // .data, .noptrdata, .bss, .noptrbss: package variables
	regionHeap          // the Go heap arena (objects, spans, goroutine stacks)
	regionAnon          // other anonymous memory: the runtime's own metadata, thread stacks
	regionOther         // vdso, the initial stack, addresses unmapped by ready
	regions
)

type faultCount [regions]int

func (c faultCount) total() (n int) {
	for _, v := range c {
		n += v
	}
	return n
}

// faultTrace is the kernel's page-fault tracepoint.
type faultTrace struct{ dir string }

func openFaultTrace(t *testing.T) faultTrace {
	t.Helper()
	dir := "/sys/kernel/tracing"
	tr := faultTrace{dir: dir}
	if _, err := os.Stat(filepath.Join(dir, "trace")); err != nil {
		// Not mounted yet: mount it (root only), and unmount it after.
		if err := syscall.Mount("nodev", dir, "tracefs", 0, ""); err != nil {
			t.Skipf("tracefs is not available: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, 0) })
	}
	if _, err := os.Stat(filepath.Join(dir, "events/exceptions/page_fault_user")); err != nil {
		t.Skipf("no page_fault_user tracepoint: %v", err)
	}
	// Leave tracing as it was found.
	saved := map[string]string{}
	for _, f := range []string{"buffer_size_kb", "tracing_on"} {
		v, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Skipf("tracefs: %v", err)
		}
		saved[f] = strings.TrimSpace(string(v))
	}
	t.Cleanup(func() {
		tr.write("events/exceptions/page_fault_user/enable", "0")
		tr.write("events/exceptions/page_fault_user/filter", "0")
		tr.write("trace", "")
		for f, v := range saved {
			tr.write(f, v)
		}
	})
	if err := tr.write("buffer_size_kb", "8192"); err != nil {
		t.Skipf("tracefs is not writable: %v", err)
	}
	return tr
}

func (tr faultTrace) write(file, v string) error {
	return os.WriteFile(filepath.Join(tr.dir, file), []byte(v), 0)
}

// set writes the files' values and returns what puts the old ones back; on
// an error it has put them back already.
func (tr faultTrace) set(values map[string]string) (restore func(), err error) {
	old := map[string]string{}
	restore = func() {
		for f, v := range old {
			tr.write(f, v)
		}
	}
	for f, v := range values {
		b, err := os.ReadFile(filepath.Join(tr.dir, f))
		if err == nil {
			old[f] = strings.TrimSpace(string(b))
			err = tr.write(f, v)
		}
		if err != nil {
			restore()
			return nil, err
		}
	}
	return restore, nil
}

// run runs tg until it is ready, tracing its faults, and returns its
// mappings at ready and the trace.
func (tr faultTrace) run(t *testing.T, tg target) (mappings, trace string) {
	t.Helper()
	// The tracepoint filters on the task's name, the executable's (at most
	// 15 bytes): only the server's threads are counted, not this test's.
	comm := filepath.Base(tg.bin)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	for _, kv := range [][2]string{{"tracing_on", "0"}, {"trace", ""}, {"events/exceptions/page_fault_user/filter", fmt.Sprintf("comm == %q", comm)},
		{"events/exceptions/page_fault_user/enable", "1"}, {"tracing_on", "1"}} {
		if err := tr.write(kv[0], kv[1]); err != nil {
			t.Fatalf("tracefs %s: %v", kv[0], err)
		}
	}
	cmd, _, stop := startReady(t, tg, true)
	defer stop()
	tr.write("tracing_on", "0")
	m, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := os.ReadFile(filepath.Join(tr.dir, "trace"))
	if err != nil {
		t.Fatal(err)
	}
	return string(m), string(tb)
}

var faultLine = regexp.MustCompile(`page_fault_user: address=0x([0-9a-f]+) `)

// span is a range of addresses and the region it is counted in.
type span struct {
	lo, hi uint64
	region int
}

// regionsOf reads the executable's sections into the regions faults are
// counted in.
func regionsOf(t *testing.T, bin string) []span {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var spans []span
	for _, s := range f.Sections {
		r := -1
		switch s.Name {
		case ".text":
			r = regionText
		case ".rodata", ".typelink", ".itablink":
			r = regionROData
		case ".gopclntab":
			r = regionPCLN
		case ".data", ".noptrdata", ".bss", ".noptrbss", ".go.buildinfo", ".go.fipsinfo", ".go.module":
			r = regionData
		}
		if r >= 0 {
			spans = append(spans, span{s.Addr, s.Addr + s.Size, r})
		}
	}
	return spans
}

// countFaults classifies each traced fault address by the executable's
// sections and the process's mappings.
func countFaults(sections []span, mappings, trace string) faultCount {
	spans := slices.Clone(sections)
	sc := bufio.NewScanner(strings.NewReader(mappings))
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		lo, hi, _ := strings.Cut(fs[0], "-")
		l, _ := strconv.ParseUint(lo, 16, 64)
		h, _ := strconv.ParseUint(hi, 16, 64)
		if len(fs) > 5 {
			continue // named: the executable (above), the stack, vdso
		}
		// The Go heap is reserved in 64 MiB arenas, below the address range
		// where mmap places the runtime's other allocations (with the
		// default x86-64 layout; a legacy layout would count the heap as
		// other anonymous memory).
		r := regionAnon
		if l < 0x7f0000000000 {
			r = regionHeap
		}
		spans = append(spans, span{l, h, r})
	}
	var c faultCount
	for _, m := range faultLine.FindAllStringSubmatch(trace, -1) {
		a, _ := strconv.ParseUint(m[1], 16, 64)
		r := regionOther
		for _, s := range spans { // sections first: the executable's bss is an anonymous mapping too
			if a >= s.lo && a < s.hi {
				r = s.region
				break
			}
		}
		c[r]++
	}
	return c
}

// faultCost measures, in µs, a first write to an anonymous page as a
// fault, and through MADV_POPULATE_WRITE (the kernel maps the pages in one
// call; "n/a" before Linux 5.14), over 4096 pages each.
func faultCost(t *testing.T) (fault float64, populate string) {
	t.Helper()
	const pages, madvPopulateWrite = 4096, 23
	perPage := func(touch func([]byte)) float64 {
		b, err := syscall.Mmap(-1, 0, pages*4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Munmap(b)
		start := time.Now()
		touch(b)
		return float64(time.Since(start).Nanoseconds()) / pages / 1000
	}
	fault = perPage(func(b []byte) {
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
	})
	var errno syscall.Errno
	us := perPage(func(b []byte) {
		_, _, errno = syscall.Syscall(syscall.SYS_MADVISE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), madvPopulateWrite)
	})
	if errno != 0 {
		return fault, "n/a"
	}
	return fault, fmt.Sprintf("%.2f µs", us)
}
