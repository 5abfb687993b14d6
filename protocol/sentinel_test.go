package protocol

import (
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
)

// A connection to a master that is demoted while it lives reports READONLY
// as a connection error, so that the pool drops it; ROLE on a replica is
// refused as a master.
func TestMasterConnDroppedWhenDemoted(t *testing.T) {
	master, replica := testenv.StartRedis(t), testenv.StartRedis(t)
	c, err := redis.Dial("tcp", replica.Addr())
	if err != nil {
		t.Fatal(err)
	}
	mc := &masterConn{Conn: c}
	defer mc.Close()
	if _, err := mc.Do("SET", "k", "v"); err != nil || mc.Err() != nil {
		t.Fatalf("SET on a master: %v, Err %v", err, mc.Err())
	}
	role, err := mc.Do("ROLE")
	if err != nil || checkMasterRole(role) != nil {
		t.Fatalf("ROLE of a master: %v %v", role, checkMasterRole(role))
	}
	replica.Do("REPLICAOF", "127.0.0.1", master.Port) // demoted under the open connection
	deadline := time.Now().Add(10 * time.Second)
	for {
		role, err = redis.DoWithTimeout(mc, time.Second, "ROLE")
		if err == nil && checkMasterRole(role) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not become a replica: %v %v", role, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := checkMasterRole(role); err == nil || !strings.Contains(err.Error(), "not master") {
		t.Fatalf("checkMasterRole on a replica: %v", err)
	}
	if _, err := mc.Do("SET", "k", "v2"); err == nil || !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("SET on a replica: %v, want READONLY", err)
	}
	if err := mc.Err(); err == nil || !strings.Contains(err.Error(), "demoted") {
		t.Fatalf("Err after READONLY = %v, want the demotion", err)
	}
}
