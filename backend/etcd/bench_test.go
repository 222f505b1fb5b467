package etcd_test

import (
	"testing"

	"github.com/batonhq/baton/storetest"
)

// BenchmarkCluster measures the store on a three-member cluster of
// processes (storetest.BenchmarkConversations):
//
//	go test -run XXX -bench Cluster -benchtime 10s ./backend/etcd
func BenchmarkCluster(b *testing.B) {
	storetest.BenchmarkConversations(b, openShared(b), shared.PIDs())
}

// BenchmarkBatches measures a batch of 16 reads and of 16 transitions on
// the three-member cluster, one after another against the store's batch
// calls (storetest.BenchmarkTokenBatches):
//
//	go test -run XXX -bench Batches -benchtime 200x -count 3 ./backend/etcd
func BenchmarkBatches(b *testing.B) {
	storetest.BenchmarkTokenBatches(b, openShared(b))
}
