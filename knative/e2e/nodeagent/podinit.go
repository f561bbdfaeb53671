package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// bindList is a repeatable --bind src:dst[:ro] flag.
type bindList []string

func (b *bindList) String() string     { return strings.Join(*b, ",") }
func (b *bindList) Set(v string) error { *b = append(*b, v); return nil }

// podInit is the last step before a container's binary: it runs inside the
// pod's network namespace (started by `ip netns exec`, which also gives it a
// private mount namespace), bind-mounts the pod's volumes at their mount
// paths, drops to the container's user and group, and execs the binary.
func podInit(args []string) error {
	fs := flag.NewFlagSet("podinit", flag.ContinueOnError)
	uid := fs.Int("uid", 0, "user id to run as")
	gid := fs.Int("gid", 0, "group id to run as")
	var binds bindList
	fs.Var(&binds, "bind", "src:dst[:ro] bind mount (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return errors.New("podinit: no command")
	}
	for _, b := range binds {
		parts := strings.Split(b, ":")
		if len(parts) < 2 {
			return fmt.Errorf("podinit: bad --bind %q", b)
		}
		src, dst := parts[0], parts[1]
		ro := len(parts) > 2 && parts[2] == "ro"
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("podinit: %w", err)
		}
		if err := syscall.Mount(src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("podinit: bind %s on %s: %w", src, dst, err)
		}
		if ro {
			if err := syscall.Mount("", dst, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("podinit: read-only %s: %w", dst, err)
			}
		}
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("podinit: %w", err)
	}
	if *uid != 0 || *gid != 0 {
		if err := syscall.Setgroups([]int{*gid}); err != nil {
			return fmt.Errorf("podinit: setgroups: %w", err)
		}
		if err := syscall.Setgid(*gid); err != nil {
			return fmt.Errorf("podinit: setgid %d: %w", *gid, err)
		}
		if err := syscall.Setuid(*uid); err != nil {
			return fmt.Errorf("podinit: setuid %d: %w", *uid, err)
		}
	}
	// Changing credentials clears the parent-death signal: set it again, so
	// a container never outlives the node agent.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0); errno != 0 {
		return fmt.Errorf("podinit: prctl: %w", errno)
	}
	return syscall.Exec(bin, argv, os.Environ())
}

// podInitArgs builds the podinit argument list for one container.
func podInitArgs(uid, gid int64, binds []string, argv []string) []string {
	a := []string{"podinit", "--uid", strconv.FormatInt(uid, 10), "--gid", strconv.FormatInt(gid, 10)}
	for _, b := range binds {
		a = append(a, "--bind", b)
	}
	a = append(a, "--")
	return append(a, argv...)
}
