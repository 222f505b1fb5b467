package main

import (
	"os"
	"testing"

	"github.com/batonhq/baton/internal/testenv/etcdcluster"
)

func TestMain(m *testing.M) {
	etcdcluster.MemberMain() // the etcd members of TestServeOnEtcd run in processes of this binary
	os.Exit(m.Run())
}
