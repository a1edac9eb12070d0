// Package e2ecluster holds only tests: gateway nodes on a real 3-master Redis Cluster (sharded
// pub/sub, failover) and on a real Sentinel setup (master failover, WAIT).
package e2ecluster
