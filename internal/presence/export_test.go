package presence

// StopForTest ends p's heartbeat without leaving the node set, as a crash would.
func StopForTest(p *Redis) {
	p.cancel()
	p.wg.Wait()
	p.batch.Close()
}

// BucketForTest is the bucket of user.
func BucketForTest(user string) int { return bucket(user) }
