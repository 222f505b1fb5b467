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
