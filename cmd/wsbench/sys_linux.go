//go:build linux

package main

import (
	"os"
	"strconv"
	"syscall"
)

// raiseNoFile lifts the soft open-file limit to the hard one: every connection is a file
// descriptor, and the soft limit is often far below the hard one.
func raiseNoFile() (soft, hard uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, 0, err
		}
	}
	return r.Cur, r.Max, nil
}

// childAttr makes a spawned process die with wsbench, whatever ends wsbench.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// setAutogroupNice sets the nice value of this process's scheduler autogroup (Linux with
// sched_autogroup, root only). With autogroups, a process's nice value only ranks it within its
// own session; against other sessions' work (builds and tests on a shared machine) only the
// autogroup's nice counts. Run wsbench under setsid so that the group is the benchmark's alone:
// the spawned gateway and Redis inherit it.
func setAutogroupNice(n int) error {
	return os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(n)), 0)
}
