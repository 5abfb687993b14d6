// Package redisnet holds the tests of direct Redis connections done
// safely: TLS (rediss://) with Celery's ssl_* parameters, Redis ACL users,
// Sentinel failover under a running worker, and a worker on a real
// network (network namespaces, a veth pair, an 80 ms / 1 % loss proxy,
// partitions). It has no code of its own; the code is protocol's
// (NewPool) and worker/runner's (lease loss).
package redisnet
