// Command auditverify checks an exported audit trail of portfolio-mcp: the
// server's structured log (its audit records), CloudEvents as the archive
// subscriber stored them (JSON lines in structured mode, a JSON batch, or
// bare event data), or any mix, from several replicas at once. Per stream
// (one per server process) it reports gaps, reordered, inserted, duplicated
// and edited events, bad signatures and unknown key ids, and streams that
// were never sealed.
//
//	auditverify -keys FILE|DIR [-open [-max-unsealed N]] [TRAIL ...]   (no TRAIL, or -: stdin)
//	auditverify keygen KEY_ID
//
// The keys are lines "<key id>:<base64 key>", public keys (what a verifier
// should hold) or the audit-signing-key secret itself; a directory is read
// file by file (a mounted Secret, a folder of published keys). keygen makes
// a key: the secret line and the public line.
//
// The last line is the verdict: OK, FAIL, or (with -open) OPEN: no problem,
// but some events of open streams are not vouched for by any signature.
//
// Exit status: 0 the trail verifies (OK, or OPEN under -open), 1 it does
// not, 2 the command could not run (usage, unreadable keys or input).
package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/verify"
)

// Exit statuses.
const (
	exitOK      = 0
	exitProblem = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the command: its exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "keygen" {
		return keygen(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("auditverify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: auditverify -keys FILE|DIR [-open [-max-unsealed N]] [TRAIL ...]\n       auditverify keygen KEY_ID")
		fs.PrintDefaults()
	}
	keysPath := fs.String("keys", "", "key file or directory: lines <key id>:<base64 key> (public keys, or the audit-signing-key secret)")
	open := fs.Bool("open", false, "accept streams without a final checkpoint (replicas still running); their unsealed tail is not vouched for, and the verdict is OPEN")
	maxUnsealed := fs.Int("max-unsealed", 0, "with -open, also fail a stream whose unsealed tail is longer than this many events (0: no limit); a running replica's is about AUDIT_CHECKPOINT_EVENTS plus what it commits while its checkpoint is signed and delivered")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *maxUnsealed < 0 {
		fmt.Fprintln(stderr, "auditverify: -max-unsealed must be 0 (no limit) or more")
		return exitUsage
	}
	if *keysPath == "" {
		fmt.Fprintln(stderr, "auditverify: -keys is required")
		fs.Usage()
		return exitUsage
	}
	keys, err := loadKeys(*keysPath, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "auditverify:", err)
		return exitUsage
	}
	in, err := readTrails(fs.Args(), stdin)
	if err != nil {
		fmt.Fprintln(stderr, "auditverify:", err)
		return exitUsage
	}
	report := verify.Verify(in, keys, verify.Options{AllowOpen: *open, MaxUnsealed: *maxUnsealed})
	report.Write(stdout)
	if !report.OK() {
		return exitProblem
	}
	return exitOK
}

// readTrails reads every named export (stdin for none or "-").
func readTrails(names []string, stdin io.Reader) (*verify.Input, error) {
	if len(names) == 0 {
		names = []string{"-"}
	}
	in := &verify.Input{}
	for _, name := range names {
		if name == "-" {
			if err := in.Read(stdin, "stdin"); err != nil {
				return nil, err
			}
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		err = in.Read(f, name)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return in, nil
}

// loadKeys reads a key file, or every file of a directory (not the
// dot-files, so a mounted Secret's ..data links are read once, through
// their names).
func loadKeys(path string, stderr io.Writer) (*audit.Keys, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	files := []string{path}
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		files = files[:0]
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	var all bytes.Buffer
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		all.Write(b)
		all.WriteByte('\n')
	}
	keys, err := audit.ParseKeys(all.Bytes())
	if err != nil {
		return nil, fmt.Errorf("keys %s: %w", path, err)
	}
	if keys.Active != "" {
		fmt.Fprintf(stderr, "note: %s holds a private key (%s); a verifier needs only the public lines (auditverify keygen prints both)\n", path, keys.Active)
	}
	return keys, nil
}

// keygen prints a new key's secret line and public line.
func keygen(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: auditverify keygen KEY_ID   (e.g. 2026-07)")
		return exitUsage
	}
	secretLine, publicLine, err := audit.GenerateKey(args[0], rand.Reader)
	if err != nil {
		fmt.Fprintln(stderr, "auditverify:", err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "# secret: the first line of the audit-signing-key secret (AWS Secrets Manager property audit-signing-key); never share it\n%s\n", secretLine)
	fmt.Fprintf(stdout, "# public: add it to every verifier's key file (auditverify -keys) and keep it as long as the trail\n%s\n", publicLine)
	return exitOK
}
