// Package proc finds and runs the external servers that integration tests
// need (redis-server, nginx) and makes sure none of them outlives its test.
//
// [Find] applies the project's rule for a missing binary: skip the test on a
// developer's machine, fail it when the CI environment variable is set,
// because CI must never pass by skipping. [Start] runs a command and watches
// its exit from one goroutine, so callers can wait with a deadline and
// escalate to SIGKILL ([Process.Stop]).
//
// It is used by the redistest and nginxtest helpers, not by tests directly.
package proc
