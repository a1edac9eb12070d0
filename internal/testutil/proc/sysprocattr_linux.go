package proc

import "syscall"

func sysProcAttr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid: group,
		// SIGTERM rather than SIGKILL: for nginx the master then stops its
		// workers itself; redis-server exits promptly on it too. Linux
		// sends it when the thread that forked the child exits, which in a
		// Go test binary means the process: nothing here locks OS threads.
		Pdeathsig: syscall.SIGTERM,
	}
}
