// Package redistest runs a real redis-server for a test.
//
// [Start] launches redis-server on a free loopback port with a fresh
// temporary directory, waits until it answers PING and registers cleanups
// that stop it and close every client handed out by [Server.Client]. The
// server persists like production should: append-only file with
// `appendfsync always` and no RDB snapshots, so [Server.Restart] (and even
// [Server.Kill] followed by Restart) keeps every acknowledged write. That is
// what the gateway's "nothing accepted with a 200 is lost across a Redis
// restart" guarantee is tested against.
//
// Tests that share one server keep their keys apart with [Prefix]. Without
// redis-server on the machine the test is skipped, except in CI (the CI
// environment variable is set), where it fails.
//
// The helpers are written for a loaded 2-core CI machine: deadlines are
// generous and every wait is a poll with a deadline, never a fixed sleep.
package redistest
