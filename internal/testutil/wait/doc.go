// Package wait polls a condition with a deadline, so tests never sleep for a
// guessed duration.
//
// A bare time.Sleep is either too short on a loaded CI machine (flaky) or too
// long everywhere else (slow). [For] checks often at first, backs off to a
// gentle rate, and fails the test with a message that says what never
// happened. It is the `checkFor` of nats-server's tests.
package wait
